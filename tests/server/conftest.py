"""A real ComfyUI server (one per test session) with this pack and the fixtures loaded."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import FIXTURE_DIR, SHARED_DIR
from devkit.comfy_server import ComfyServer


@pytest.fixture(scope="session")
def server_models_dir(comfy_host, tmp_path_factory) -> Path:
    """Fixtures (incl. the full SDXL checkpoint for the SDXL workflow), demo adapters and profiles."""
    from devkit.fixtures import ensure_fixtures
    from devkit.demo_models import prepare_models_dir

    fixtures = ensure_fixtures(FIXTURE_DIR, sdxl_checkpoint=True)
    sage = SHARED_DIR / "data" if (SHARED_DIR / "data").is_dir() else None
    return prepare_models_dir(tmp_path_factory.mktemp("models"), fixtures, sage)


@pytest.fixture(scope="session")
def comfy_server(comfy_host, server_models_dir, tmp_path_factory):
    """The running server; its log is printed when a test fails (see the hook below)."""
    server = ComfyServer(comfy_host, python=sys.executable, models_dir=server_models_dir,
                         work_dir=tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    server = item.funcargs.get("comfy_server") if hasattr(item, "funcargs") else None
    if report.failed and server is not None:
        report.sections.append(("ComfyUI server log", server.log_tail(120)))


@pytest.fixture(scope="session")
def hostile_models_dir(comfy_host, fixture_paths, tmp_path_factory) -> Path:
    """A models folder the reliability tests may fill with bad files (not the shared server's)."""
    from support.hostile_world import build_models_dir

    return build_models_dir(tmp_path_factory.mktemp("hostile_models"), fixture_paths)


@pytest.fixture(scope="session")
def hostile_server(comfy_host, hostile_models_dir, tmp_path_factory):
    """One server for the whole bad-input corpus and the privacy tests (docs/security.md)."""
    from support.hostile_world import extra_paths_yaml

    work = tmp_path_factory.mktemp("hostile_server")
    server = ComfyServer(comfy_host, python=sys.executable, models_dir=hostile_models_dir, work_dir=work,
                         start_timeout=600, extra_args=[
                             "--extra-model-paths-config",
                             str(extra_paths_yaml(hostile_models_dir, work / "llm_paths.yaml"))],
                         env={"PSA_TEMPLATE_SECONDS": "5"})  # the hostile templates' limit (docs/security.md)
    server.start()
    yield server
    server.stop()
