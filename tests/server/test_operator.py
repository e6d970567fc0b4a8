"""Operator mode on a real ComfyUI (docs/deployment.md): identity, the prompt check, isolation, the cache,
the status route, the shipped nginx example and a broken configuration.

One operator server for the module (plus one with a missing configuration, started alongside it).
Users: Alice (strict, adapter pinned, minimum psa_scale 1), Bob (minimum 0.5), root (admin).
"""
from __future__ import annotations

import base64
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import numpy as np
import pytest

from devkit.comfy_server import ComfyServer, free_port
from support.hostile_world import build_models_dir
from support.operator_world import (MARKER, PASSWORDS, PROFILES, PROXY_SECRET, PROXY_SECRET_HEADER,
                                    PROXY_USER_HEADER, Caller, WsListener, apply_graph, graph, mixed_graph,
                                    ssha_htpasswd, stock_graph, write_config)

from conftest import REPO_ROOT

ENV = "PSA_OPERATOR_CONFIG"
PATHS = ("/prompt", "/api/prompt")
SEED = 7  # one seed for every run that compares pixels: the references are computed once


def _start(comfy_host, models, work: Path, config: Path) -> ComfyServer:
    # ComfyUI's LRU cache keeps every prompt's results, not only the last prompt's: more chances for one
    # user's result to be served to another, and only three distinct sampler runs in the whole module.
    return ComfyServer(comfy_host, python=sys.executable, models_dir=models, work_dir=work, start_timeout=300,
                       env={ENV: str(config)}, extra_args=["--cache-lru", "32"]).start()


@pytest.fixture(scope="module")
def servers(comfy_host, fixture_paths, tmp_path_factory):
    """(operator server, server whose configuration file is missing), started side by side."""
    models = build_models_dir(tmp_path_factory.mktemp("operator_models"), fixture_paths, with_llm=False)
    work = tmp_path_factory.mktemp("operator_server")
    config = write_config(work / "operator.toml")
    broken_work = tmp_path_factory.mktemp("operator_broken")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        main = pool.submit(_start, comfy_host, models, work, config)
        broken = pool.submit(_start, comfy_host, models, broken_work, broken_work / "missing.toml")
        started = [main.result(), broken.result()]
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def users(server):
    return {name: Caller.token(server.url, name) for name in ("alice", "bob", "root")}


@pytest.fixture(scope="module")
def reference(users):
    """Pixels of direct (admin, unpinned) runs: (profile file, seed) → image."""
    cache: dict = {}

    def get(profile: str, seed: int) -> np.ndarray:
        if (profile, seed) not in cache:
            root = users["root"]
            cache[profile, seed] = root.pixels(root.wait(root.submit(graph(profile, seed))))
        return cache[profile, seed]

    return get


def _history_size(root: Caller) -> int:
    return len(root.get("/history")[1])


# -- identity ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_no_or_false_identity_is_refused_and_nothing_is_queued(server, users, path):
    before = _history_size(users["root"])
    attempts = {
        "no identity": {},
        "wrong token": {"Authorization": "Bearer not-a-token"},
        "spoofed comfy-user": {"comfy-user": "root"},
        "forged proxy header, no secret": {PROXY_USER_HEADER: "root"},
        "forged proxy header, wrong secret": {PROXY_USER_HEADER: "root", PROXY_SECRET_HEADER: "guess"},
        "proxy header + wrong token": {"Authorization": "Bearer nope", PROXY_USER_HEADER: "root",
                                       PROXY_SECRET_HEADER: PROXY_SECRET},
    }
    for what, headers in attempts.items():
        status, body = Caller(server.url, headers).post(path, {"prompt": graph()})
        assert status == 401, what
        assert body["error"]["type"].startswith("psa_operator_") and body["node_errors"] == {}, what
        assert Caller(server.url, headers).get("/history")[0] == 401, what
    assert users["root"].get("/queue")[1] == {"queue_running": [], "queue_pending": []}
    assert _history_size(users["root"]) == before
    # The proxy's header with the right secret is an identity (what the shipped nginx example sends).
    proxied = Caller(server.url, {PROXY_USER_HEADER: "bob", PROXY_SECRET_HEADER: PROXY_SECRET})
    assert proxied.get("/queue")[0] == 200


# -- the prompt check -------------------------------------------------------------------------------
ATTACKS = {
    "psa_scale 0": (lambda: graph(psa_scale=0.0), "7", "psa_operator_psa_scale_below_minimum"),
    "stock KSampler": (stock_graph, "7", "psa_operator_unpersonalised_sampler"),
    "PSA + stock branch": (mixed_graph, "17", "psa_operator_unpersonalised_sampler"),
    "LoRA after the patcher": (lambda: apply_graph(lora_after_patcher=True), "11",
                               "psa_operator_model_changed_after_psa"),
    "narrowed window": (lambda: graph(end_percent=0.3), "7", "psa_operator_window_narrowed"),
    "cfg 0 (negative prompt, null profile)": (lambda: graph(cfg=0.0), "7", "psa_operator_cfg_below_one"),
    "Sage user as profile": (lambda: dict(graph(), **{"5": {"class_type": "PSASageUser", "inputs": {"user_id": 1}}}),
                             "5", "psa_operator_node_not_allowed"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_alice_attacks_are_refused_with_comfyuis_error_shape(server, users, path, attack):
    build, node, error_type = ATTACKS[attack]
    before = _history_size(users["root"])
    status, body = users["alice"].post(path, {"prompt": build()})
    assert status == 400, body
    assert body["error"]["message"] == "Prompt refused by operator policy"
    assert error_type in [e["type"] for e in body["node_errors"][node]["errors"]], body["node_errors"]
    assert _history_size(users["root"]) == before


@pytest.mark.parametrize("path", PATHS)
def test_bobs_profile_is_pinned_to_alices_own(users, reference, path):
    alice = users["alice"]
    entry = alice.wait(alice.submit(graph(PROFILES["bob"], seed=SEED), path=path))
    assert alice.image_ref(entry)["subfolder"] == "psa_users/alice"
    pixels = alice.pixels(entry)
    assert np.array_equal(pixels, reference(PROFILES["alice"], SEED))
    assert not np.array_equal(pixels, reference(PROFILES["bob"], SEED))  # the profile makes a visible difference


def test_stock_sampler_on_psa_apply_profile_runs_pinned(users, reference):
    """PSA Apply Profile + a stock KSampler is allowed; the profile is still Alice's; Bob's /queue never shows it."""
    alice, root = users["alice"], users["root"]
    prompt_id = alice.submit(apply_graph(seed=3))  # a new sampler run: it stays in the queue for a while
    views = {name: {item[1] for items in users[name].get("/queue")[1].values() for item in items}
             for name in ("alice", "bob", "root")}  # in this order: an entry root still sees was there before
    assert prompt_id not in views["bob"]
    if prompt_id in views["root"]:
        assert prompt_id in views["alice"]
    entry = alice.wait(prompt_id)
    direct = apply_graph(seed=3)
    direct["5"]["inputs"]["profile_name"] = PROFILES["alice"]
    assert np.array_equal(alice.pixels(entry), root.pixels(root.wait(root.submit(direct))))


# -- isolation --------------------------------------------------------------------------------------
def test_bob_cannot_see_alices_history_images_or_listing(server, users):
    alice, bob, root = users["alice"], users["bob"], users["root"]
    prompt_id = alice.submit(graph(seed=SEED))
    entry = alice.wait(prompt_id)
    ref = alice.image_ref(entry)
    assert bob.get(f"/history/{prompt_id}")[1] == {} and bob.get(f"/api/history/{prompt_id}")[1] == {}
    assert prompt_id not in bob.get("/history")[1] and prompt_id in alice.get("/history")[1]
    assert prompt_id in root.get("/history")[1]
    assert bob.get("/view?" + urllib.parse.urlencode(ref))[0] == 404
    for sneaky in ({**ref, "subfolder": "psa_users/bob/../alice"}, {**ref, "filename": ref["filename"] + " [output]",
                                                                    "subfolder": "psa_users/bob"},
                   {"filename": f"psa_users/alice/{ref['filename']}", "subfolder": "psa_users/bob"}):
        assert bob.get("/view?" + urllib.parse.urlencode(sneaky))[0] == 404, sneaky
    assert alice.get("/view?" + urllib.parse.urlencode(ref))[0] == 200
    assert bob.get("/internal/files/output")[0] == 403
    assert bob.post("/history", {"delete": [prompt_id]})[0] == 403
    assert prompt_id in alice.get("/history")[1]
    assert (server.output_dir / "psa_users" / "alice" / ref["filename"]).is_file()


def test_bob_cannot_reuse_alices_prompt_id(users):
    """A prompt_id is its first user's: reusing it would put Bob's run into Alice's history entry."""
    alice, bob, root = users["alice"], users["bob"], users["root"]
    prompt_id = alice.submit(graph(seed=SEED))
    entry = alice.wait(prompt_id)
    size = _history_size(root)
    status, body = bob.post("/prompt", {"prompt": graph(seed=SEED), "prompt_id": prompt_id})
    assert status == 409 and body["error"]["type"] == "psa_operator_prompt_id_taken", (status, body)
    assert _history_size(root) == size
    assert alice.get(f"/history/{prompt_id}")[1][prompt_id]["outputs"] == entry["outputs"]


def test_bob_cannot_attach_to_alices_websocket(server, users):
    alice_id = f"alice-{uuid.uuid4().hex}"
    ws_url = server.url.replace("http", "ws", 1)
    headers = {name: {"Authorization": f"Bearer {users[name].headers['Authorization'].split()[1]}"}
               for name in ("alice", "bob")}
    with WsListener(f"{ws_url}/ws?clientId={alice_id}", headers["alice"]) as alice_ws, \
            WsListener(f"{ws_url}/ws", headers["bob"]) as bob_ws:
        assert alice_ws.error is None and bob_ws.error is None
        with WsListener(f"{ws_url}/ws?clientId={alice_id}", headers["bob"]) as hijack:
            assert hijack.error is not None and "403" in str(hijack.error)
        status, body = users["bob"].post("/prompt", {"prompt": graph(), "client_id": alice_id})
        assert status == 403 and body["error"]["type"] == "psa_operator_client_id_taken"
        prompt_id = users["alice"].submit(graph(seed=SEED), client_id=alice_id)
        users["alice"].wait(prompt_id)
        time.sleep(0.5)
    assert any(m.get("type") == "executed" and m["data"].get("prompt_id") == prompt_id for m in alice_ws.messages)
    assert not any(prompt_id in str(m) for m in bob_ws.messages)
    bob_sid = next(m["data"]["sid"] for m in bob_ws.messages if m.get("type") == "status")
    with WsListener(f"{ws_url}/ws?clientId={bob_sid}", headers["alice"]) as hijack:  # an id the server handed Bob
        assert hijack.error is not None and "403" in str(hijack.error)


ADMIN_ROUTES = [("POST", "/free", {"unload_models": True}), ("POST", "/interrupt", {}),
                ("POST", "/queue", {"clear": True}), ("POST", "/history", {"clear": True}),
                ("GET", "/internal/logs", None), ("GET", "/internal/files/output", None),
                ("GET", "/psa/operator/status", None), ("GET", "/api/psa/operator/status", None),
                ("GET", "/userdata?dir=workflows", None), ("POST", "/upload/image", {}),
                ("GET", "/internal/folder_paths", None)]


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_admin_routes_refuse_users(users, user):
    for method, path, body in ADMIN_ROUTES:
        status, answer = users[user].call(method, path, body)
        assert status == 403, (method, path, status)
    assert users["root"].get("/internal/logs")[0] == 200


def test_interleaved_users_each_get_their_own_profile_never_the_others_cache(users, reference):
    """40 prompts, Alice and Bob alternating, the *same* graph body: pinning alone tells them apart."""
    submitted = []
    for i in range(40):
        name = ("alice", "bob")[i % 2]
        submitted.append((name, users[name].submit(graph("demo_adult.json", seed=SEED), path=PATHS[i % 4 // 2])))
    seen = {name: {item[1] for items in users[name].get("/queue")[1].values() for item in items}
            for name in ("alice", "bob")}
    assert seen["bob"] <= {pid for name, pid in submitted if name == "bob"}
    assert seen["alice"] <= {pid for name, pid in submitted if name == "alice"}
    for name, prompt_id in submitted:
        caller = users[name]
        assert np.array_equal(caller.pixels(caller.wait(prompt_id)), reference(PROFILES[name], SEED)), name
    assert not np.array_equal(reference(PROFILES["alice"], SEED), reference(PROFILES["bob"], SEED))


# -- the operator's view ----------------------------------------------------------------------------
def test_status_route_shows_users_profiles_and_refusal_counts_only(server, users):
    users["alice"].post("/prompt", {"prompt": graph(psa_scale=0.0)})
    Caller(server.url).get("/queue")
    status, body = users["root"].get("/psa/operator/status")
    assert status == 200 and body["mode"] == "on"
    assert {u["name"]: u["profile"] for u in body["users"]} == {**PROFILES, "root": None}
    assert body["refusals"]["psa_scale_below_minimum"] >= 1 and body["refusals"]["unauthenticated"] >= 1
    text = str(body)
    for secret in ("Self-Harm", "Violence", MARKER, "token"):  # labels inside the profile files, prompt text
        assert secret not in text
    log = server.log_text()
    assert "refused a prompt of user 'alice': psa_scale_below_minimum" in log
    assert MARKER not in log


# -- broken configuration ---------------------------------------------------------------------------
def test_missing_configuration_refuses_everything(servers):
    broken = servers[1]
    for headers in ({}, {"Authorization": "Bearer root-test-token-c0ffee"}):
        for path in PATHS:
            status, body = Caller(broken.url, headers).post(path, {"prompt": graph()})
            assert status == 503 and body["error"]["type"] == "psa_operator_config_broken"
    assert Caller(broken.url).get("/history")[0] == 503
    time.sleep(1)
    assert not broken.output_dir.exists() or not any(broken.output_dir.rglob("*.png"))
    assert "configuration error" in broken.log_text() and "missing.toml" in broken.log_text()


# -- the shipped nginx example ----------------------------------------------------------------------
def _nginx_conf(example: str, port: int, upstream: int, htpasswd: Path) -> str:
    conf = example.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
    conf = re.sub(r"^\s*ssl_certificate.*\n", "", conf, flags=re.M)
    conf = conf.replace("server 127.0.0.1:8188;", f"server 127.0.0.1:{upstream};")
    conf = conf.replace("/etc/nginx/psa-operator.htpasswd", str(htpasswd))
    conf = conf.replace("CHANGE-ME-long-random-secret", PROXY_SECRET)
    assert conf.count(str(upstream)) == 1 and PROXY_SECRET in conf
    return conf


def _answers(url: str) -> bool:
    try:
        Caller(url).get("/queue")
        return True
    except OSError:
        return False


def test_through_the_shipped_nginx_example(server, users, tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/test.sh installs the Debian package when it runs as root)")
    port = free_port()
    example = (REPO_ROOT / "docs" / "nginx-psa-operator.conf").read_text()
    (tmp_path / "logs").mkdir()
    # As root, nginx's workers would run as 'nobody', who cannot read pytest's private tmp folders.
    (tmp_path / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n"
        f"  client_body_temp_path {tmp_path}/body;\n  proxy_temp_path {tmp_path}/proxy;\n"
        + _nginx_conf(example, port, server.port, ssha_htpasswd(tmp_path / "htpasswd")) + "\n}\n")
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e",
                             str(tmp_path / "logs" / "error.log"), "-g", "daemon off;"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        basic = {name: "Basic " + base64.b64encode(f"{name}:{pw}".encode()).decode()
                 for name, pw in PASSWORDS.items()}
        deadline = time.monotonic() + 20
        while not _answers(url):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.2)
        assert Caller(url).get("/queue")[0] == 401  # nginx asks for a password
        # A client that claims to be root in the proxy's own header is still only Alice.
        alice = Caller(url, {"Authorization": basic["alice"], PROXY_USER_HEADER: "root", "comfy-user": "root"})
        bob = Caller(url, {"Authorization": basic["bob"]})
        wrong = "Basic " + base64.b64encode(b"alice:wrong-password").decode()
        assert Caller(url, {"Authorization": wrong}).get("/queue")[0] == 401
        assert alice.get("/psa/operator/status")[0] == 403
        prompt_id = alice.submit(graph(PROFILES["bob"], seed=SEED), path="/api/prompt")
        entry = alice.wait(prompt_id)
        assert alice.image_ref(entry)["subfolder"] == "psa_users/alice"
        assert bob.get(f"/history/{prompt_id}")[1] == {}
        assert users["root"].get(f"/history/{prompt_id}")[1][prompt_id]["prompt"][3]["client_id"]
        ws = f"ws://127.0.0.1:{port}/ws"
        with WsListener(ws, {"Authorization": basic["bob"]}) as listener:
            deadline = time.monotonic() + 10
            while not listener.messages and time.monotonic() < deadline:
                time.sleep(0.1)
        assert listener.error is None and listener.messages[0]["type"] == "status"
    finally:
        proc.terminate()
        proc.wait(10)
