"""The pack as users meet it: every shipped workflow loaded, inspected and queued in the real ComfyUI frontend.

Headless Chromium (Debian's package, installed here when missing; the test skips with the
reason when it cannot be) driven by Playwright's Python API against the frontend served by the
session's test server. Screenshots go to ``test-artifacts/`` and the latest are copied to
``docs/screenshots/`` for the README (with ``PSA_UPDATE_SCREENSHOTS=1``, which also refreshes the
template thumbnails ``workflows/<name>.jpg``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from devkit.workflows import api_to_ui, shipped_workflows, substitute

WORKFLOWS = shipped_workflows()
FIXTURE_NAMES = {"psa_sdxl_basic": ("sdxl_tiny.safetensors", "psa_demo_sdxl.safetensors"),
                 "psa_sdxl_reference": ("sdxl_tiny.safetensors", "psa_demo_sdxl.safetensors")}
DEFAULT_NAMES = ("sd15_tiny.safetensors", "psa_demo_sd15.safetensors")
PROFILES = ["demo_child.json", "demo_teen.json", "demo_adult.json"]
CATEGORY = "PSA (personalized safety)"
ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"  # README copies, refreshed with PSA_UPDATE_SCREENSHOTS=1
WORKFLOW_THUMBNAILS = REPO_ROOT / "workflows"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A visible PrimeVue dialog whose text speaks of missing nodes / node types not found.
MISSING_DIALOG_JS = """() => [...document.querySelectorAll('.p-dialog')]
    .filter(d => d.offsetParent !== null || d.getClientRects().length)
    .map(d => d.innerText)
    .filter(t => /missing|not found/i.test(t))"""


def _chromium() -> str:
    for candidate in (os.environ.get("PSA_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    reason = "apt-get not found"
    if shutil.which("apt-get"):
        try:
            for cmd in (["apt-get", "install", "-y", "-qq", "chromium"], ["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "chromium"]):
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                                      env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
                reason = (proc.stderr or proc.stdout).strip()[-300:]
                if cmd[1] == "install" and proc.returncode == 0 and Path("/usr/bin/chromium").exists():
                    return "/usr/bin/chromium"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
    pytest.skip(f"chromium is not installed and could not be installed: {reason}")


@pytest.fixture(scope="module")
def page(comfy_server, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1920, "height": 1080})
        page = context.pages[0] if context.pages else context.new_page()
        page.psa_console = []  # (type, text) of every console message and page error
        page.on("console", lambda msg: page.psa_console.append((msg.type, msg.text)))
        page.on("pageerror", lambda exc: page.psa_console.append(("pageerror", str(exc))))
        page.goto(comfy_server.url, wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_function(
            "() => window.app && window.app.graph && window.LiteGraph && window.app.canvas"
            " && Object.keys(window.LiteGraph.registered_node_types).includes('PSAModelPatcher')",
            timeout=90_000)
        page.evaluate("""async () => {  // full-detail nodes at screenshot zoom, no minimap
            const s = window.app.extensionManager && window.app.extensionManager.setting;
            for (const [id, v] of [['LiteGraph.Canvas.MinFontSizeForLOD', 1], ['Comfy.Minimap.Visible', false]])
                try { await s.set(id, v); } catch (e) { /* setting absent in this frontend */ } }""")
        yield page
        context.close()


def _fixture_ui(comfy_server, name: str) -> dict:
    checkpoint, adapter = FIXTURE_NAMES.get(name, DEFAULT_NAMES)
    api = substitute(json.loads(WORKFLOWS[name][1].read_text()), checkpoint, adapter, PROFILES, 64, steps=1)
    return api_to_ui(api, comfy_server.get_json("/object_info"))


# Every visible PrimeVue dialog (a first-run frontend opens its template browser over the canvas).
VISIBLE_DIALOGS_JS = "() => [...document.querySelectorAll('.p-dialog')].filter(d => d.offsetParent !== null).length"


def _press_escape_while(page, dialogs_js: str) -> None:
    for _ in range(3):
        if not page.evaluate(dialogs_js):
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def _dismiss_dialogs(page) -> None:
    _press_escape_while(page, MISSING_DIALOG_JS)


# Clicks the close button of every visible dialog (Escape does not reach a dialog without focus).
CLICK_DIALOG_CLOSE_JS = """() => [...document.querySelectorAll('.p-dialog')].filter(d => d.offsetParent !== null)
    .map(d => [...d.querySelectorAll('button')].find(b => b.offsetParent !== null && (
        /close/i.test(b.getAttribute('aria-label') || '') || b.classList.contains('p-dialog-close-button')
        || b.querySelector('.pi-times, [class*="lucide--x"]'))))
    .filter(Boolean).map(b => b.click()).length"""


def _close_all_dialogs(page) -> None:
    for _ in range(3):
        if not page.evaluate(VISIBLE_DIALOGS_JS):
            return
        if not page.evaluate(CLICK_DIALOG_CLOSE_JS):
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)


def test_missing_node_dialog_is_detected(page):
    """Control for the check below: an unknown node type does raise the dialog we look for."""
    bogus = {"last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {},
             "version": 0.4, "nodes": [{"id": 1, "type": "PSANoSuchNodeType", "pos": [40, 40], "size": [200, 60],
                                        "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
                                        "properties": {}, "widgets_values": []}]}
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", bogus)
    page.wait_for_function(f"() => ({MISSING_DIALOG_JS})().length > 0", timeout=15_000)
    texts = page.evaluate(MISSING_DIALOG_JS)
    assert any("PSANoSuchNodeType" in t for t in texts), texts
    _dismiss_dialogs(page)
    assert not page.evaluate(MISSING_DIALOG_JS)


def test_every_psa_node_is_documented_in_the_frontend(page):
    """All PSA node definitions as the frontend holds them (incl. the ones the fixtures swap out)."""
    defs = page.evaluate("""(category) => Object.entries(window.LiteGraph.registered_node_types)
        .filter(([, cls]) => cls.nodeData && cls.nodeData.category === category)
        .map(([type, cls]) => ({type, display: cls.nodeData.display_name, description: cls.nodeData.description,
                                input: cls.nodeData.input, output_tooltips: cls.nodeData.output_tooltips}))""",
                         CATEGORY)
    types = {d["type"] for d in defs}
    assert {"PSAModelPatcher", "PSALoadProfile", "PSASageUser", "PSAProfilePreset", "PSAProfileBatch",
            "PSAApplyProfile", "PSAKSampler", "PSAImageGrid"} <= types, types
    for d in defs:
        assert d["display"].startswith("PSA ") and d["description"], d["type"]
        outputs = d["output_tooltips"] or []  # an output node (PSA Save Image (redacted)) has none
        assert all(outputs) and (outputs or d["type"] == "PSASaveImageRedacted"), d["type"]
        specs = {**d["input"].get("required", {}), **d["input"].get("optional", {})}
        missing = [n for n, spec in specs.items() if not (len(spec) > 1 and (spec[1] or {}).get("tooltip"))]
        assert missing == [], (d["type"], missing)
    # The shipped files as users get them only use node types the frontend knows.
    for name, (ui_path, _) in WORKFLOWS.items():
        used = {n["type"] for n in json.loads(ui_path.read_text())["nodes"]}
        unknown = page.evaluate("(ts) => ts.filter(t => !window.LiteGraph.registered_node_types[t])", sorted(used))
        assert unknown == [], (name, unknown)


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_in_the_browser(name, page, comfy_server):
    object_info = comfy_server.get_json("/object_info")
    ui = _fixture_ui(comfy_server, name)
    psa_types = {n["type"] for n in ui["nodes"] if object_info[n["type"]]["category"] == CATEGORY}
    assert psa_types, f"{name} has no PSA node"
    console_start = len(page.psa_console)
    _dismiss_dialogs(page)

    page.evaluate("async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }", [ui, name])
    page.wait_for_timeout(1000)  # the missing-nodes dialog opens asynchronously after loading
    assert page.evaluate(MISSING_DIALOG_JS) == [], "missing node types dialog after loading"

    # Every node of the file is in the graph as a registered (not placeholder) node, with its widgets.
    graph = page.evaluate("""() => window.app.graph._nodes.map(n => ({
        id: n.id, type: n.type, registered: !!window.LiteGraph.registered_node_types[n.type],
        widgets: (n.widgets || []).map(w => w.name),
        inputs: (n.inputs || []).map(i => i.name),
        nodeData: n.constructor.nodeData ? {category: n.constructor.nodeData.category,
                  description: n.constructor.nodeData.description, input: n.constructor.nodeData.input,
                  output_tooltips: n.constructor.nodeData.output_tooltips} : null}))""")
    by_id = {n["id"]: n for n in graph}
    assert set(by_id) == {n["id"] for n in ui["nodes"]}
    for node in ui["nodes"]:
        live = by_id[node["id"]]
        assert live["type"] == node["type"] and live["registered"], live
        if node["type"] not in psa_types:
            continue
        data = live["nodeData"]
        assert data and data["category"] == CATEGORY, (node["type"], data)
        assert data["description"], f"{node['type']} has no description"
        assert data["output_tooltips"] and all(data["output_tooltips"]), f"{node['type']} output tooltips"
        specs = {**data["input"].get("required", {}), **data["input"].get("optional", {})}
        for input_name, spec in specs.items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            assert opts.get("tooltip"), f"{node['type']}.{input_name} has no tooltip"
            is_widget = isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if is_widget:
                assert input_name in live["widgets"], (node["type"], input_name, live["widgets"])
            else:
                assert input_name in live["inputs"], (node["type"], input_name, live["inputs"])

    # Queue it through the frontend and wait for the server to finish it with an image.
    before = set(comfy_server.get_json("/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + 600  # a loaded 2-core CI machine needs minutes for the SDXL fixture
    entry = None
    while time.monotonic() < deadline:
        new = {k: v for k, v in comfy_server.get_json("/history").items() if k not in before}
        entry = next(iter(new.values()), None)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        if entry and entry.get("status", {}).get("status_str") == "error":
            break
        time.sleep(0.5)
    assert entry is not None, "the queued prompt never reached the server history"
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert images, entry["outputs"]
    # The image arrives in the page too (the output node shows it).
    filenames = [img["filename"] for img in images]
    page.wait_for_function(
        """(names) => Object.values(window.app.nodeOutputs || {}).some(o => (o.images || [])
            .some(i => names.includes(i.filename)))
           || window.app.graph._nodes.some(n => (n.imgs || []).some(i => names.some(f => i.src.includes(f))))""",
        arg=filenames, timeout=30_000)
    page.evaluate("""async () => {  // whole graph in view for the screenshot
        try { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }
        catch (e) { window.app.canvas.ds.scale = 0.6; window.app.canvas.setDirty(true, true); } }""")
    page.wait_for_timeout(1500)  # let the canvas draw the image before the screenshot

    errors = [text for kind, text in page.psa_console[console_start:]
              if kind in ("error", "pageerror") and ("psa" in text.lower() or any(t in text for t in psa_types))]
    assert errors == [], errors

    _close_all_dialogs(page)  # the screenshot (and the committed thumbnail) must show the graph
    assert page.evaluate(VISIBLE_DIALOGS_JS) == 0, ("a dialog still covers the canvas", page.evaluate(
        "() => [...document.querySelectorAll('.p-dialog')].filter(d => d.offsetParent !== null)"
        ".map(d => (d.className + ' | ' + d.innerText).slice(0, 300))"))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(shot))
    if os.environ.get("PSA_UPDATE_SCREENSHOTS") == "1":  # refresh the committed copies only on purpose
        _save_small_copy(shot, SCREENSHOTS / f"{name}.png")
        _save_thumbnail(shot, WORKFLOW_THUMBNAILS / f"{name}.jpg")


def _save_thumbnail(src: Path, dst: Path) -> None:
    """The template browser's thumbnail: ``workflows/<name>.jpg`` beside the workflow file."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img.crop((left, top, left + side, top + side)).resize((384, 384), Image.LANCZOS).save(dst, quality=85)


def _save_small_copy(src: Path, dst: Path) -> None:
    """A small copy for the README (1280 px wide, 128-colour palette)."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    img = img.resize((1280, round(img.height * 1280 / img.width)), Image.LANCZOS)
    img.quantize(colors=128).save(dst, optimize=True)
