"""The shipped UI workflows appear in the frontend's template browser (ComfyUI 0.3.75 convention).

ComfyUI lists ``custom_nodes/*/{example_workflows,example,examples,workflow,workflows}/*.json``
(one level, not recursive) under GET /api/workflow_templates, keyed by the pack's folder name,
and serves the folder at /api/workflow_templates/<pack folder>/.
"""
from __future__ import annotations

import json
import urllib.request

from devkit.workflows import WORKFLOW_DIR, shipped_workflows

PACK_FOLDER = "ComfyUI-PSA"  # the folder name in custom_nodes (scripts/provision.sh)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_workflows_are_listed_as_templates(comfy_server):
    listing = comfy_server.get_json("/api/workflow_templates")
    assert PACK_FOLDER in listing, sorted(listing)
    names = sorted(listing[PACK_FOLDER])
    assert names == sorted(shipped_workflows()), names  # the 6 UI files, each once
    assert len(names) == 6  # 4 workflows + the 2 reference-settings twins
    # The API-format twins (workflows/api/) are not templates: no API-format file is listed.
    assert not any(name.startswith("api") or "/" in name for name in names)


def test_each_template_is_served_as_the_ui_file(comfy_server):
    for name in comfy_server.get_json("/api/workflow_templates")[PACK_FOLDER]:
        served = json.loads(_get(f"{comfy_server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.json"))
        assert served == json.loads((WORKFLOW_DIR / f"{name}.json").read_text())
        assert "nodes" in served and "links" in served  # UI format, loadable from the template browser
