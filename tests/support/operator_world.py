"""Operator-mode test helpers: a configuration with two users and an admin, an HTTP caller that sends
credentials, a websocket listener, and the prompts the attacks send (tiny model, 64 px, 1 step)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from psa_model.operator.identity import sha256_hex
from support.hostile_world import base_prompt, load_profile

TOKENS = {"alice": "alice-test-token-7f3a9c", "bob": "bob-test-token-21d4e8", "root": "root-test-token-c0ffee"}
PROFILES = {"alice": "demo_child.json", "bob": "demo_teen.json"}
PROXY_SECRET = "proxy-shared-secret-5b8e1d0a"
PROXY_USER_HEADER, PROXY_SECRET_HEADER = "X-PSA-User", "X-PSA-Proxy-Secret"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
MARKER = "zebra-secret-prompt-text-41"  # typed into refused prompts; must never reach the server log


def write_config(path: Path) -> Path:
    """Alice (strict: adapter pinned, minimum psa_scale 1), Bob (minimum 0.5), root (admin)."""
    allowed = ["CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "VAEDecode", "SaveImage", "KSampler",
               "KSamplerAdvanced", "LoraLoaderModelOnly", "PSAModelPatcher", "PSALoadProfile", "PSAProfileBatch",
               "PSAApplyProfile", "PSAKSampler", "PSASaveImageRedacted"]
    path.write_text(f"""# operator test configuration
[identity]
proxy_user_header = "{PROXY_USER_HEADER}"
proxy_secret_header = "{PROXY_SECRET_HEADER}"
proxy_secret_sha256 = "{sha256_hex(PROXY_SECRET)}"

[policy]
allowed_nodes = {json.dumps(allowed)}

[users.alice]
profile = "{PROFILES['alice']}"
adapter = "psa_a.safetensors"
min_psa_scale = 1.0
token_sha256 = "{sha256_hex(TOKENS['alice'])}"

[users.bob]
profile = "{PROFILES['bob']}"
min_psa_scale = 0.5
token_sha256 = "{sha256_hex(TOKENS['bob'])}"

[users.root]
admin = true
token_sha256 = "{sha256_hex(TOKENS['root'])}"
""")
    return path


def ssha_htpasswd(path: Path) -> Path:
    """An nginx password file ({SSHA} scheme) for Alice and Bob."""
    lines = []
    for user, password in PASSWORDS.items():
        salt = hashlib.sha256(user.encode()).digest()[:8]
        digest = hashlib.sha1(password.encode() + salt).digest()
        lines.append(f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Caller:
    """HTTP calls to one base URL with fixed credential headers; answers (status, parsed JSON or bytes)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url, self.headers = base_url, dict(headers or {})

    @classmethod
    def token(cls, base_url: str, user: str) -> "Caller":
        return cls(base_url, {"Authorization": f"Bearer {TOKENS[user]}"})

    def call(self, method: str, path: str, body=None, timeout: float = 60.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload

    def get(self, path: str):
        return self.call("GET", path)

    def post(self, path: str, body):
        return self.call("POST", path, body)

    def submit(self, prompt: dict, path: str = "/prompt", client_id: str | None = None) -> str:
        status, body = self.post(path, {"prompt": prompt, **({"client_id": client_id} if client_id else {})})
        assert status == 200, (status, body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id) if status == 200 else None
            if entry and entry.get("status", {}).get("completed") is not None:
                assert entry["status"]["status_str"] == "success", entry["status"]
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def image_ref(self, entry: dict) -> dict:
        return next(img for out in entry["outputs"].values() for img in out.get("images", []))

    def pixels(self, entry: dict) -> np.ndarray:
        status, png = self.get("/view?" + urllib.parse.urlencode(self.image_ref(entry)))
        assert status == 200 and isinstance(png, bytes), status
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def graph(profile: str = "demo_adult.json", seed: int = 1, **changes) -> dict:
    """PSA KSampler graph (nodes 1-9, profile in node 5); ``changes`` set node 7's inputs."""
    prompt = base_prompt(adapter="psa_a.safetensors", profile=load_profile(profile), seed=seed, prefix="mine", steps=1)
    prompt["3"]["inputs"]["text"] = MARKER
    prompt["7"]["inputs"].update(changes)
    return prompt


def stock_graph(seed: int = 1) -> dict:
    prompt = graph(seed=seed)
    inputs = {k: v for k, v in prompt["7"]["inputs"].items()
              if k not in ("profile", "psa_scale", "start_percent", "end_percent")}
    prompt["7"] = {"class_type": "KSampler", "inputs": dict(inputs, model=["1", 0])}
    del prompt["2"], prompt["5"]
    return prompt


def apply_graph(seed: int = 1, lora_after_patcher: bool = False) -> dict:
    """PSA Apply Profile → stock KSampler; optionally a LoRA between the PSA model and the sampler."""
    prompt = stock_graph(seed)
    prompt["2"] = {"class_type": "PSAModelPatcher", "inputs": {"model": ["1", 0], "adapter_name": "psa_a.safetensors"}}
    prompt.update(load_profile("demo_adult.json"))
    prompt["10"] = {"class_type": "PSAApplyProfile", "inputs": {"model": ["2", 0], "profile": ["5", 0],
                                                                "psa_scale": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["7"]["inputs"]["model"] = ["10", 0]
    if lora_after_patcher:
        prompt["11"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": "x",
                                                                        "strength_model": 1.0}}
        prompt["7"]["inputs"]["model"] = ["11", 0]
    return prompt


def mixed_graph() -> dict:
    """A PSA branch and a second, stock branch from the same checkpoint."""
    prompt = graph()
    stock = stock_graph(seed=2)
    prompt["17"] = stock["7"]
    prompt["18"] = {"class_type": "VAEDecode", "inputs": {"samples": ["17", 0], "vae": ["1", 2]}}
    prompt["19"] = {"class_type": "SaveImage", "inputs": {"images": ["18", 0], "filename_prefix": "stock"}}
    return prompt


class WsListener:
    """A websocket client in a background thread, collecting every JSON message it receives."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.messages: list[dict] = []
        self.error: Exception | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.url, headers=self.headers) as ws:
                    self.ready.set()
                    while not self._stop.is_set():
                        try:
                            msg = await ws.receive(timeout=0.2)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self.messages.append(json.loads(msg.data))
                        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
        except Exception as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.ready.set()

    def __enter__(self) -> "WsListener":
        self._thread.start()
        self.ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
