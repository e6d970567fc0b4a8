"""Keep each shipped UI-format workflow and its API-format twin in step.

The API twin (``workflows/api/NAME.json``, what ``/prompt`` takes) is the source; the UI file
(``workflows/NAME.json``, what the frontend loads) is generated from it with the node
definitions of a running server (``/object_info``), and ``ui_to_api`` reads a UI file back so
tests can check that the two still say the same thing.

    python -m devkit.workflows OBJECT_INFO_JSON   # regenerate workflows/*.json from workflows/api/
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

WORKFLOW_DIR = Path(__file__).resolve().parent.parent / "workflows"
API_DIR = WORKFLOW_DIR / "api"
_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
_SEED_NAMES = {"seed", "noise_seed"}


def _input_specs(info: dict) -> list[tuple[str, list]]:
    specs = info["input"]
    out = list(specs.get("required", {}).items()) + list(specs.get("optional", {}).items())
    return [(name, spec) for name, spec in out if name not in specs.get("hidden", {})]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in _WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and (name in _SEED_NAMES or bool(options.get("control_after_generate")))


def _depths(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            links = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(str(src)) for src in links), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def api_to_ui(api: dict, object_info: dict) -> dict:
    """An API-format graph → a UI-format workflow (layout by graph depth)."""
    depth = _depths(api)
    ordered = sorted(api, key=lambda n: (depth[n], int(n)))
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs: dict[str, list[dict]] = {}
    for node_id in ordered:
        info = object_info[api[node_id]["class_type"]]
        outputs[node_id] = [{"name": name, "type": kind, "links": [], "slot_index": i}
                            for i, (name, kind) in enumerate(zip(info["output_name"], info["output"]))]
    for order, node_id in enumerate(ordered):
        node = api[node_id]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in _input_specs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list):  # a link: [source node id, output slot]
                link_id = len(links) + 1
                src, slot = str(value[0]), value[1]
                links.append([link_id, int(src), slot, int(node_id), len(inputs), info_type(object_info, api, src, slot)])
                outputs[src][slot]["links"].append(link_id)
                inputs.append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": link_id})
            elif _is_widget(spec) and value is not None:
                widgets.append(value)
                if _has_control_widget(name, spec):
                    widgets.append("fixed")
            elif value is None and not _is_widget(spec):
                inputs.append({"name": name, "type": spec[0], "link": None})
        row = rows.get(depth[node_id], 0)
        rows[depth[node_id]] = row + 1
        entry = {"id": int(node_id), "type": node["class_type"], "pos": [40 + 340 * depth[node_id], 40 + 300 * row],
                 "size": [315, 60 + 26 * (len(inputs) + len(widgets))], "flags": {}, "order": order, "mode": 0,
                 "inputs": inputs, "outputs": outputs[node_id],
                 "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets}
        if "_meta" in node and "title" in node["_meta"]:
            entry["title"] = node["_meta"]["title"]
        nodes.append(entry)
    return {"last_node_id": max(int(n) for n in api), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def info_type(object_info: dict, api: dict, node_id: str, slot: int) -> str:
    return object_info[api[node_id]["class_type"]]["output"][slot]


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """A UI-format workflow → the API-format graph the frontend would queue (titles dropped)."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) != 0:
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        widgets = list(node.get("widgets_values", []))
        inputs = {}
        for name, spec in _input_specs(info):
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
                if _is_widget(spec) and widgets:
                    widgets.pop(0)  # a widget converted to an input keeps its slot in widgets_values
            elif _is_widget(spec) and widgets:
                inputs[name] = widgets.pop(0)
                if _has_control_widget(name, spec) and widgets:
                    widgets.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def strip_meta(api: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def shipped_workflows() -> dict[str, tuple[Path, Path]]:
    """name → (UI file, API twin)."""
    return {p.stem: (WORKFLOW_DIR / p.name, p) for p in sorted(API_DIR.glob("*.json"))}


def main(argv: list[str]) -> int:
    object_info = json.loads(Path(argv[0]).read_text())
    for name, (ui_path, api_path) in shipped_workflows().items():
        ui = api_to_ui(json.loads(api_path.read_text()), object_info)
        ui_path.write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote {ui_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def with_profile_count(api: dict, count: int) -> dict:
    """A copy of a comparison graph (PSA Load Profile nodes → PSA Profile Batch → sampler) for ``count`` profiles.

    The load and batch nodes are rebuilt (a batch node takes up to four inputs, so more profiles
    chain batch nodes: profile_1 of the next one is the previous batch); the latent batch size and
    the image grid's columns follow the profile count.
    """
    if count < 1:
        raise ValueError(f"need at least one profile, got {count}")
    out = json.loads(json.dumps(api))
    batch_ids = [k for k, v in out.items() if v["class_type"] == "PSAProfileBatch"]
    load_ids = [k for k, v in out.items() if v["class_type"] == "PSALoadProfile"]
    if not batch_ids or not load_ids:
        raise ValueError("not a comparison graph: it needs PSA Load Profile nodes and a PSA Profile Batch")
    removed = set(batch_ids) | set(load_ids)
    consumers = [(node, name) for k, node in out.items() if k not in removed
                 for name, value in node["inputs"].items() if isinstance(value, list) and value[0] in batch_ids]
    for k in removed:
        del out[k]
    next_id = max(int(k) for k in list(out) + list(removed)) + 1
    loads = []
    for _ in range(count):
        out[str(next_id)] = {"class_type": "PSALoadProfile", "inputs": {"profile_name": ""}}
        loads.append([str(next_id), 0])
        next_id += 1
    head, rest = loads[0], loads[1:]
    while rest:  # each batch node: the running batch + up to three more profiles
        take, rest = rest[:3], rest[3:]
        out[str(next_id)] = {"class_type": "PSAProfileBatch",
                             "inputs": {f"profile_{i + 1}": link for i, link in enumerate([head, *take])}}
        head = [str(next_id), 0]
        next_id += 1
    for node, name in consumers:
        node["inputs"][name] = head
    for node in out.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"]["batch_size"] = count
        if node["class_type"] == "PSAImageGrid":
            node["inputs"]["columns"] = count if count <= 4 else math.ceil(math.sqrt(count))
    return out


def substitute(api: dict, checkpoint: str | None = None, adapter: str | None = None,
               profiles: list[str] | None = None, size: int | None = None, steps: int | None = None) -> dict:
    """A copy of an API graph with model/profile names (and optionally size and steps) replaced.

    ``profiles`` replaces the ``profile_name`` of PSA Load Profile nodes in node-id order, and
    turns PSA Profile Preset / Sage User nodes into PSA Load Profile nodes with the next name.
    """
    out = json.loads(json.dumps(api))
    queue = list(profiles or [])
    for node_id in sorted(out, key=int):
        node = out[node_id]
        inputs, kind = node["inputs"], node["class_type"]
        if checkpoint and "ckpt_name" in inputs:
            inputs["ckpt_name"] = checkpoint
        if adapter and "adapter_name" in inputs:
            inputs["adapter_name"] = adapter
        if queue and kind in ("PSALoadProfile", "PSAProfilePreset", "PSASageUser"):
            out[node_id] = {"class_type": "PSALoadProfile", "inputs": {"profile_name": queue.pop(0)}}
        if size and "width" in inputs:
            inputs["width"] = inputs["height"] = size
        if steps and "steps" in inputs:
            inputs["steps"] = steps
    return out
