"""Privacy (docs/security.md, "Privacy"): attributes and embedding numbers stay out of PNG metadata and the log.

The redacted route: attributes typed into PSA Profile Policy (one of them through a linked
primitive node) → PSA Save Image (redacted). The same prompt also saves through ComfyUI's Save
Image, which must show the attributes — proof that the scan would see a leak.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from devkit.workflows import api_to_ui, shipped_workflows, substitute, ui_to_api
from support.hostile_world import base_prompt, policy_profile

SECRETS = ("Buddhism", "sexual assault", "visual impairment")  # typed into the widgets below
AGE = 67
VOCABULARY = ("Christianity", "Islam", "Buddhism", "depression", "anxiety", "natural disasters", "major accidents",
              "sexual assault", "hearing impairment", "visual impairment", "intellectual disability")


def _text_chunks(png: bytes) -> dict[str, str]:
    image = Image.open(io.BytesIO(png))
    image.load()
    return dict(image.text)


def _embedding_numbers(folder) -> list[str]:
    """The first values of every embedding file, as Python and numpy print them."""
    out = []
    for path in sorted(folder.rglob("*.npy")):
        try:
            values = np.load(path, allow_pickle=False).reshape(-1)[:3]
        except Exception:  # noqa: BLE001 - the corpus leaves damaged files around
            continue
        if values.dtype.kind == "f" and values.size and np.isfinite(values).all() and np.abs(values).max() < 1e6:
            out += [repr(float(v)) for v in values] + [str(v) for v in values]
    return [n for n in out if len(n) > 6]  # short numbers (e.g. 1.0) occur anywhere


def _queue_with_workflow(server, prompt: dict) -> dict:
    workflow = api_to_ui(prompt, server.get_json("/object_info"))
    body = {"prompt": prompt, "client_id": server.client_id, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    prompt_id = server.post_json("/prompt", body)["prompt_id"]
    return server.wait(prompt_id, timeout=900)


def _images_by_node(server, entry: dict) -> dict[str, list[bytes]]:
    return {node: server.images({"outputs": {node: out}}) for node, out in entry["outputs"].items()}


def test_redacted_save_keeps_typed_attributes_out(hostile_server, hostile_models_dir):
    prompt = base_prompt(save="PSASaveImageRedacted", prefix="psa_private", seed=11, profile=policy_profile(
        "nearest", age=["40", 0], gender="female", religion=SECRETS[0], mental_condition=SECRETS[1],
        physical_condition=SECRETS[2], forbidden_source="explicit / from file", forbidden="Violence, Shocking"))
    prompt["40"] = {"class_type": "PrimitiveInt", "inputs": {"value": AGE}}
    prompt["41"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "psa_plain"}}
    log_start = len(hostile_server.log_text())
    entry = _queue_with_workflow(hostile_server, prompt)
    images = _images_by_node(hostile_server, entry)

    plain = " ".join(_text_chunks(images["41"][0]).values())
    assert all(secret in plain for secret in SECRETS)  # ComfyUI's Save Image keeps them: the scan can see leaks

    (redacted_png,) = images["9"]
    chunks = _text_chunks(redacted_png)
    assert {"prompt", "workflow"} <= set(chunks)
    text = " ".join(chunks.values())
    for secret in (*SECRETS, "Violence, Shocking", *_embedding_numbers(hostile_models_dir / "psa_profiles")):
        assert secret not in text, f"{secret!r} leaked into the PNG metadata"
    saved = json.loads(chunks["prompt"])
    for name in ("age", "gender", "religion", "mental_condition", "physical_condition", "forbidden"):
        assert saved["20"]["inputs"][name] in ("<redacted>", ["40", 0]), name
    assert saved["40"]["inputs"]["value"] == "<redacted>"
    nodes = {n["id"]: n for n in json.loads(chunks["workflow"])["nodes"]}
    assert AGE not in nodes[40]["widgets_values"]
    assert set(nodes[20]["widgets_values"]) <= {"<redacted>", "(none: use the widgets)", "explicit / from file"}

    log = hostile_server.log_text()[log_start:]
    assert not [s for s in SECRETS if s in log], log[-2000:]


PROFILES = ["demo_child.json", "demo_teen.json", "demo_adult.json"]


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_shipped_workflow_images_carry_no_attributes(name, hostile_server, hostile_models_dir):
    """Each shipped graph on the SD1.5 fixture (the metadata depends on the graph, not on the model)."""
    api = substitute(json.loads(shipped_workflows()[name][1].read_text()), "sd15_tiny.safetensors",
                     "psa_a.safetensors", PROFILES, 64, steps=2)
    log_start = len(hostile_server.log_text())
    entry = hostile_server.run(api, timeout=900)
    pngs = hostile_server.images(entry)
    assert pngs
    numbers = _embedding_numbers(hostile_models_dir / "psa_profiles")
    assert numbers
    for png in pngs:
        chunks = _text_chunks(png)
        assert "prompt" in chunks
        text = " ".join(chunks.values())
        leaked = [s for s in (*VOCABULARY, *numbers) if s in text]
        assert not leaked, f"{name}: {leaked} in the PNG metadata"
    log = hostile_server.log_text()[log_start:]
    assert not [s for s in (*VOCABULARY, *numbers) if s in log]


# The inputs PSA Save Image (redacted) must blank (docs/security.md, "Privacy"); every other widget keeps its value.
SENSITIVE = {"PSAProfilePolicy": {"age", "gender", "religion", "mental_condition", "physical_condition", "forbidden"},
             "PSASageUser": {"user_id"}}


def _widget_problems(api: dict, object_info: dict) -> list[str]:
    """Each literal input that would not validate against ``/object_info`` (a sensitive one must be redacted)."""
    problems = []
    for node_id, node in api.items():
        info = object_info[node["class_type"]]["input"]
        specs = {**info.get("required", {}), **info.get("optional", {})}
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link
                continue
            where = f"{node['class_type']} #{node_id} {name}={value!r}"
            if name in SENSITIVE.get(node["class_type"], ()):
                if value != "<redacted>":
                    problems.append(f"{where}: not redacted")
                continue
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(kind, list) or kind == "COMBO":
                ok = value in (kind if isinstance(kind, list) else options.get("options", []))
            elif kind in ("INT", "FLOAT"):
                ok = number and (kind == "FLOAT" or float(value).is_integer()) and \
                    options.get("min", value) <= value <= options.get("max", value)
            elif kind == "STRING":
                ok = isinstance(value, str)
            elif kind == "BOOLEAN":
                ok = isinstance(value, bool)
            else:
                ok = True
            if not ok:
                problems.append(f"{where}: not a valid {kind}")
    return problems


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_redacted_image_reopens_with_valid_widgets(name, hostile_server):
    """Each shipped graph, plus one PSA Profile Policy per forbidden_source choice the node offers, saved
    through PSA Save Image (redacted) and reopened from the PNG: the sensitive widgets read <redacted>,
    every other widget value still validates against the server's /object_info."""
    object_info = hostile_server.get_json("/object_info")
    source = object_info["PSAProfilePolicy"]["input"]["required"]["forbidden_source"]
    choices = source[0] if isinstance(source[0], list) else source[1]["options"]
    assert len(choices) >= 4
    api = substitute(json.loads(shipped_workflows()[name][1].read_text()), "sd15_tiny.safetensors",
                     "psa_a.safetensors", PROFILES, 64, steps=2)
    for i, choice in enumerate(choices):  # not linked to an output: saved in the workflow, never run
        api[f"9{i}0"] = policy_profile(forbidden_source=choice)["20"]
    (images,) = [node["inputs"]["images"] for node in api.values() if node["class_type"] == "SaveImage"][:1]
    api["999"] = {"class_type": "PSASaveImageRedacted", "inputs": {"images": images, "filename_prefix": "psa_reopen"}}
    body = {"prompt": api, "client_id": hostile_server.client_id,
            "extra_data": {"extra_pnginfo": {"workflow": api_to_ui(api, object_info)}}}
    entry = hostile_server.wait(hostile_server.post_json("/prompt", body)["prompt_id"], timeout=900)
    png = _images_by_node(hostile_server, entry)["999"][0]
    reopened = ui_to_api(json.loads(_text_chunks(png)["workflow"]), object_info)
    assert {n["inputs"]["forbidden_source"] for n in reopened.values() if n["class_type"] == "PSAProfilePolicy"} \
        == set(choices)
    assert _widget_problems(reopened, object_info) == []
