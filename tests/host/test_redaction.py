"""Redaction of profile attributes from saved-image metadata (docs/security.md, "Privacy"), on plain dictionaries."""
from __future__ import annotations

import json

import pytest

from devkit.pack_loader import load_pack

PROMPT = {
    "20": {"class_type": "PSAProfilePolicy", "inputs": {
        "profile_file": "(none: use the widgets)", "age": ["40", 0], "gender": "female", "religion": "Islam",
        "mental_condition": "war", "physical_condition": "healthy", "forbidden_source": "rule policy",
        "forbidden": "Hate"}},
    "40": {"class_type": "PrimitiveInt", "inputs": {"value": 71}},
    "21": {"class_type": "PSASageUser", "inputs": {"user_id": 4711}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a park", "clip": ["1", 1]}},
}
WORKFLOW = {
    "nodes": [
        {"id": 20, "type": "PSAProfilePolicy", "inputs": [{"name": "age", "link": 7, "widget": {"name": "age"}}],
         "widgets_values": ["(none: use the widgets)", 71, "female", "Islam", "war", "healthy", "rule policy", "Hate"]},
        {"id": 40, "type": "PrimitiveNode", "widgets_values": [71, "fixed"]},
        {"id": 3, "type": "CLIPTextEncode", "widgets_values": ["a park"]},
    ],
    "links": [[7, 40, 0, 20, 1, "INT"]],
    "definitions": {"subgraphs": [{"nodes": [{"id": 5, "type": "PSASageUser", "widgets_values": [4711]}],
                                   "links": []}]},
}
SOURCES = ("Sage policy", "rule policy", "explicit / from file", "LLM (needs PSA Encode Profile + category prompt)")


@pytest.fixture(scope="module")
def redaction(comfy_host):
    load_pack()
    import importlib

    return importlib.import_module("comfyui_psa_pack_under_test.nodes.redaction")


def test_prompt_inputs_and_linked_primitives_are_redacted(redaction):
    out = redaction.redact_prompt(PROMPT)
    text = json.dumps(out)
    for secret in ("female", "Islam", "war", "4711", "71", "Hate"):
        assert secret not in text
    assert out["20"]["inputs"]["age"] == ["40", 0] and out["40"]["inputs"]["value"] == "<redacted>"
    assert out["20"]["inputs"]["forbidden_source"] == "rule policy"
    assert out["3"] == PROMPT["3"]
    assert PROMPT["20"]["inputs"]["religion"] == "Islam"  # the original (kept in the history) is untouched


def test_workflow_widgets_links_and_subgraphs_are_redacted(redaction):
    out = redaction.redact_extra_pnginfo({"workflow": WORKFLOW, "other": {"x": 1}}, SOURCES)
    text = json.dumps(out["workflow"])
    for secret in ("female", "Islam", "war", "4711", "71", "Hate"):
        assert secret not in text
    assert out["workflow"]["nodes"][0]["widgets_values"][0] == "(none: use the widgets)"
    assert "rule policy" in out["workflow"]["nodes"][0]["widgets_values"]
    assert out["workflow"]["nodes"][2]["widgets_values"] == ["a park"]
    assert out["other"] == {"x": 1}
    assert WORKFLOW["nodes"][0]["widgets_values"][3] == "Islam"


@pytest.mark.parametrize("value", [None, [], "text", {"nodes": "not a list"}])
def test_odd_metadata_never_raises(redaction, value):
    redaction.redact_prompt(value)
    redaction.redact_workflow(value, SOURCES)
    redaction.redact_extra_pnginfo(value if not isinstance(value, dict) else {"workflow": value}, SOURCES)


def test_the_saver_keeps_every_choice_the_policy_node_offers(redaction):
    """PSA Save Image (redacted) reads the kept choices from PSA Profile Policy (every one, the default first)."""
    load_pack()
    import importlib

    save_nodes = importlib.import_module("comfyui_psa_pack_under_test.nodes.save_nodes")
    assert save_nodes.policy_source_choices() == SOURCES
    workflow = {"nodes": [{"id": 1, "type": "PSAProfilePolicy", "widgets_values": ["(none: use the widgets)", 30,
                                                                                   "male", source, "Hate"]}
                          for source in SOURCES], "links": []}
    out = redaction.redact_workflow(workflow, save_nodes.policy_source_choices())
    assert [n["widgets_values"][3] for n in out["nodes"]] == list(SOURCES)
