"""Run a real ComfyUI server (``main.py --cpu``) with this pack loaded, and talk to its API.

Used by the server-tier tests and by the main job. Every wait has a timeout; the process is
always stopped (``with ComfyServer(...) as server:``); failures carry the server log's tail.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_LINK_NAME = "ComfyUI-PSA"


# ComfyUI's start-up table "Import times for custom nodes": one line per module it tried to load.
_IMPORT_TIME_LINE = re.compile(r"^\s*\d+(?:\.\d+)? seconds(?P<failed> \(IMPORT FAILED\))?: (?P<path>.+?)\s*$")


def custom_node_imports(log: str) -> dict[Path, bool]:
    """ComfyUI's custom-node import table from a server log: module path (resolved) → loaded without error.

    A module is identified by the file or folder ComfyUI loaded, so a pack is found by its path, not
    by a substring that another module's path (e.g. a checkout named ``ComfyUI-PSA`` holding the
    host tree) could also contain.
    """
    table = {}
    for line in log.splitlines():
        match = _IMPORT_TIME_LINE.match(line)
        if match:
            table[Path(match["path"]).resolve()] = match["failed"] is None
    return table


class ServerError(RuntimeError):
    """The server did not start, died, or a prompt failed; the message includes the log tail."""


class PromptRejected(ServerError):
    """``/prompt`` refused the graph before running it (validation); the message names node, input and reason."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_extra_model_paths(models_dir: Path | None, path: Path,
                            extra_folders: dict[str, list[Path]] | None = None) -> Path:
    """An ``extra_model_paths.yaml`` that adds ``models_dir``'s subfolders to ComfyUI's folders.

    ``extra_folders`` (model kind → folders) are registered too, ahead of every other folder of
    their kind (``is_default``), so files given by path are found under their own name first.
    """
    kinds = ["checkpoints", "diffusion_models", "vae", "loras", "controlnet", "psa_adapters", "psa_profiles"]
    lines = []
    if models_dir is not None:
        lines += ["psa_test_models:", f"  base_path: {models_dir}"] + [f"  {k}: {k}" for k in kinds]
    if extra_folders:
        lines += ["psa_given_files:", "  is_default: true"]
        for kind, folders in extra_folders.items():
            lines += [f"  {kind}: |"] + [f"    {Path(folder).resolve()}" for folder in dict.fromkeys(folders)]
    path.write_text("\n".join(lines) + "\n")
    return path


def prompt_rejection(body: dict) -> str:
    """ComfyUI's answer to a rejected ``/prompt`` (HTTP 400) as lines of node, input and reason."""
    lines = []
    for node_id, node in sorted((body.get("node_errors") or {}).items(), key=lambda item: str(item[0])):
        for err in node.get("errors", []):
            where = f"node {node_id} ({node.get('class_type', '?')})"
            input_name = (err.get("extra_info") or {}).get("input_name")
            if input_name:
                where += f", input '{input_name}'"
            reason = err.get("message", "")
            if err.get("details"):
                reason += f": {err['details']}"
            lines.append(f"{where}: {reason}")
    if not lines:
        error = body.get("error") or {}
        reason = error.get("message", "") if isinstance(error, dict) else str(error)
        if isinstance(error, dict) and error.get("details"):
            reason += f": {error['details']}"
        lines.append(reason or "the server gave no reason")
    return "\n".join(lines)


class ComfyServer:
    """A ComfyUI server process on a loopback port."""

    def __init__(self, comfyui_path: Path, python: str = sys.executable, models_dir: Path | None = None,
                 port: int | None = None, work_dir: Path | None = None, start_timeout: float = 180.0,
                 extra_args: list[str] | None = None, extra_folders: dict[str, list[Path]] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.comfyui_path = Path(comfyui_path)
        if not (self.comfyui_path / "main.py").is_file():
            raise ServerError(f"{self.comfyui_path} has no main.py: not a ComfyUI tree (check COMFYUI_PATH)")
        self.python = python
        self.models_dir = models_dir
        self.port = port or free_port()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="psa-comfy-"))
        self.start_timeout = start_timeout
        self.extra_args = extra_args or []
        self.extra_folders = extra_folders or {}
        self.env = env or {}  # added to this process's environment for the server
        self.log_path = self.work_dir / "server.log"
        self.output_dir = self.work_dir / "output"
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    @property
    def pack_path(self) -> Path:
        """Where this pack sits in the host's ``custom_nodes`` (scripts/provision.sh links it there)."""
        return self.comfyui_path / "custom_nodes" / PACK_LINK_NAME

    def pack_imported(self) -> bool | None:
        """Whether ComfyUI loaded this pack without error (None: not in its import table at all)."""
        return custom_node_imports(self.log_text()).get(self.pack_path.resolve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ComfyServer":
        if port_in_use(self.port):
            raise ServerError(f"port {self.port} is already in use; stop the other server or pick another port")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "input").mkdir(exist_ok=True)  # ComfyUI's video/API nodes fail to load without it
        args = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--output-directory", str(self.output_dir), "--input-directory", str(self.work_dir / "input"),
                "--temp-directory", str(self.work_dir), "--disable-auto-launch",
                "--database-url", f"sqlite:///{self.work_dir / 'comfy.db'}", *self.extra_args]
        if self.models_dir is not None or self.extra_folders:
            paths = write_extra_model_paths(self.models_dir, self.work_dir / "paths.yaml", self.extra_folders)
            args += ["--extra-model-paths-config", str(paths)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=self.comfyui_path, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} during start-up\n{self.log_tail()}")
            if self._answers_http():
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"ComfyUI did not answer /system_stats within {self.start_timeout:.0f} s\n{self.log_tail()}")

    def _answers_http(self) -> bool:
        """Up once it answers HTTP at all (in operator mode a call without credentials gets 401)."""
        try:
            urllib.request.urlopen(self.url + "/system_stats", timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "--- server log (tail) ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP ----------------------------------------------------------------------------------
    def _request(self, path: str, data: dict | None = None, timeout: float = 30.0) -> bytes:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if path == "/prompt" and exc.code == 400:
                try:
                    body = json.loads(text)
                except json.JSONDecodeError:
                    body = None
                if isinstance(body, dict):
                    raise PromptRejected(f"the server rejected the workflow:\n{prompt_rejection(body)}") from None
            raise ServerError(f"{path} answered HTTP {exc.code}: {text[:4000]}") from None

    def get_json(self, path: str, timeout: float = 30.0):
        return json.loads(self._request(path, timeout=timeout))

    def post_json(self, path: str, data: dict, timeout: float = 30.0):
        return json.loads(self._request(path, data, timeout=timeout))

    def queue(self, prompt: dict) -> str:
        """Submit an API-format graph; returns its prompt id (raises with node errors if rejected)."""
        return self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The prompt's ``/history`` entry once it finished; raises on an execution error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"ComfyUI died while running {prompt_id}\n{self.log_tail()}")
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") == "error":
                    raise ServerError(f"prompt failed: {execution_error(entry)}")
                return entry
            time.sleep(0.25)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def images(self, entry: dict) -> list[bytes]:
        """PNG bytes of every image a finished prompt saved, fetched through ``/view``."""
        out = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
                out.append(self._request(f"/view?{query}"))
        return out


def execution_error(entry: dict) -> str:
    """The exception message of a failed prompt's ``execution_error`` message, if any."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message', '').strip()}"
    return "unknown error (no execution_error message)"
