"""Operator mode's prompt check: which graphs a non-admin may queue and how they are pinned
(docs/deployment.md, "The prompt check")."""
from __future__ import annotations

import json

import pytest

from conftest import REPO_ROOT
from psa_model.operator.config import parse_config
from psa_model.operator.graph import PromptRefused, check_and_pin, problems_to_node_errors, signature_table
from support.operator_policy_config import raw_config

# Output types as ComfyUI declares them (nodes.py / the pack's schemas).
SIGNATURES = signature_table({
    "CheckpointLoaderSimple": ("MODEL", "CLIP", "VAE"), "CLIPTextEncode": ("CONDITIONING",),
    "EmptyLatentImage": ("LATENT",), "VAEDecode": ("IMAGE",), "SaveImage": (), "KSampler": ("LATENT",),
    "LoraLoaderModelOnly": ("MODEL",), "CFGGuider": ("GUIDER",), "PSAModelPatcher": ("MODEL",),
    "PSALoadProfile": ("PSA_PROFILE", "STRING"), "PSAProfileBatch": ("PSA_PROFILE", "STRING"),
    "PSASageUser": ("PSA_PROFILE", "STRING"), "PSAApplyProfile": ("MODEL",), "PSAKSampler": ("LATENT",),
    "AnySwitch": ("*",),
    "SamplerCustom": ("LATENT", "LATENT"), "BasicScheduler": ("SIGMAS",), "PSATextEncodeLiteral": ("CONDITIONING",),
    "PSAPLMSSampler": ("SAMPLER",), "PSAPLMSSchedule": ("SIGMAS",), "PSAEulerSampler": ("SAMPLER",),
    "PSAProfilePreset": ("PSA_PROFILE", "STRING"),
})


@pytest.fixture()
def config():
    return parse_config(raw_config())


def _graph(sampler: str = "psa") -> dict:
    """Checkpoint → patcher → (PSA KSampler | Apply Profile → KSampler) with profile from node 5 → save."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "PSAModelPatcher", "inputs": {"model": ["1", 0], "adapter_name": "other.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a park"}},
        "5": {"class_type": "PSALoadProfile", "inputs": {"profile_name": "bob.json"}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "../../etc/x"}},
    }
    common = {"seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["6", 0], "denoise": 1.0}
    if sampler == "psa":
        g["7"] = {"class_type": "PSAKSampler", "inputs": {"model": ["2", 0], "profile": ["5", 0], "psa_scale": 1.0,
                                                         "start_percent": 0.0, "end_percent": 1.0, **common}}
    else:
        g["4"] = {"class_type": "PSAApplyProfile", "inputs": {"model": ["2", 0], "profile": ["5", 0],
                                                             "psa_scale": 1.5}}
        g["7"] = {"class_type": "KSampler", "inputs": {"model": ["4", 0], **common}}
    return g


def _reasons(config, graph, user="alice") -> set[str]:
    with pytest.raises(PromptRefused) as caught:
        check_and_pin(graph, config.users[user], config, SIGNATURES)
    return {p.reason for p in caught.value.problems}


# -- the prompt check -------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["psa", "apply"])
def test_good_graph_is_pinned_to_the_callers_profile_adapter_and_folder(config, sampler):
    graph = _graph(sampler)
    pinned = check_and_pin(graph, config.users["alice"], config, SIGNATURES)
    assert pinned["5"]["inputs"]["profile_name"] == "alice.json"          # was bob.json
    assert pinned["2"]["inputs"]["adapter_name"] == "psa.safetensors"
    assert pinned["9"]["inputs"]["filename_prefix"] == "psa_users/alice/x"
    assert graph["5"]["inputs"]["profile_name"] == "bob.json"             # the caller's dict is untouched


def test_bob_keeps_any_adapter_when_none_is_configured(config):
    pinned = check_and_pin(_graph(), config.users["bob"], config, SIGNATURES)
    assert pinned["2"]["inputs"]["adapter_name"] == "other.safetensors"
    assert pinned["5"]["inputs"]["profile_name"] == "bob.json"


def test_admin_graphs_pass_unchanged(config):
    graph = _graph()
    graph["7"]["inputs"]["psa_scale"] = 0.0
    assert check_and_pin(graph, config.users["root"], config, SIGNATURES) is graph


def test_stock_sampler_graph_is_refused(config):
    graph = _graph("apply")
    graph["7"]["inputs"]["model"] = ["1", 0]
    del graph["4"]
    assert _reasons(config, graph) == {"unpersonalised_sampler"}


def test_mixed_graph_with_one_stock_branch_is_refused_as_a_whole(config):
    graph = _graph("psa")
    graph["17"] = {"class_type": "KSampler", "inputs": dict(graph["7"]["inputs"], model=["1", 0])}
    for key in ("profile", "psa_scale", "start_percent", "end_percent"):
        graph["17"]["inputs"].pop(key)
    graph["18"] = {"class_type": "VAEDecode", "inputs": {"samples": ["17", 0], "vae": ["1", 2]}}
    graph["19"] = {"class_type": "SaveImage", "inputs": {"images": ["18", 0], "filename_prefix": "x"}}
    with pytest.raises(PromptRefused) as caught:
        check_and_pin(graph, config.users["alice"], config, SIGNATURES)
    assert [(p.node_id, p.reason, p.input_name) for p in caught.value.problems] == [
        ("17", "unpersonalised_sampler", "model")]


def test_stock_sampler_on_the_patched_model_without_a_profile_is_refused(config):
    graph = _graph("apply")
    graph["7"]["inputs"]["model"] = ["2", 0]
    assert "unpersonalised_sampler" in _reasons(config, graph)


@pytest.mark.parametrize("between", ["apply_to_sampler", "patcher_to_apply"])
def test_model_patch_after_the_patcher_is_refused(config, between):
    graph = _graph("apply")
    if between == "apply_to_sampler":
        graph["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": "l",
                                                                       "strength_model": 1.0}}
        graph["7"]["inputs"]["model"] = ["10", 0]
        assert _reasons(config, graph) == {"model_changed_after_psa", "unpersonalised_sampler"}
    else:
        graph["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0], "lora_name": "l",
                                                                       "strength_model": 1.0}}
        graph["4"]["inputs"]["model"] = ["10", 0]
        assert _reasons(config, graph) == {"model_changed_after_psa", "unpersonalised_sampler"}


def test_lora_before_the_patcher_is_allowed(config):
    graph = _graph("apply")
    graph["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "l",
                                                                   "strength_model": 1.0}}
    graph["2"]["inputs"]["model"] = ["10", 0]
    assert check_and_pin(graph, config.users["alice"], config, SIGNATURES)["5"]["inputs"]["profile_name"] == \
        "alice.json"


def test_guider_counts_as_a_sampler(config):
    graph = _graph("apply")
    graph["11"] = {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["3", 0],
                                                         "negative": ["3", 0], "cfg": 5.0}}
    assert _reasons(config, graph) == {"unpersonalised_sampler"}


def _reference_workflow_as_a_caller_sends_it(name: str) -> dict:
    """A shipped reference workflow (API form) with its PSA Profile Preset swapped for PSA Load Profile."""
    graph = json.loads((REPO_ROOT / "workflows" / "api" / f"{name}.json").read_text())
    for node in graph.values():
        node.pop("_meta", None)
        if node["class_type"] == "PSAProfilePreset":
            node.update(class_type="PSALoadProfile", inputs={"profile_name": "someone_else.json"})
    return graph


@pytest.mark.parametrize("name", ["psa_sd15_reference", "psa_sdxl_reference"])
def test_reference_workflows_pass_the_default_policy_pinned_and_refused_off_the_psa_model(name):
    raw = raw_config()
    del raw["policy"]["allowed_nodes"]  # the shipped default list
    default = parse_config(raw)
    graph = _reference_workflow_as_a_caller_sends_it(name)
    pinned = check_and_pin(graph, default.users["alice"], default, SIGNATURES)
    assert [n["inputs"]["profile_name"] for n in pinned.values() if n["class_type"] == "PSALoadProfile"] == \
        ["alice.json"]
    with pytest.raises(PromptRefused):  # as the workflow comes, the preset is not the caller's profile
        check_and_pin(json.loads((REPO_ROOT / "workflows" / "api" / f"{name}.json").read_text()),
                      default.users["alice"], default, SIGNATURES)
    sampler = next(k for k, n in graph.items() if n["class_type"] == "SamplerCustom")
    schedule = graph[graph[sampler]["inputs"]["sigmas"][0]]
    checkpoint = next(k for k, n in graph.items() if n["class_type"] == "CheckpointLoaderSimple")
    for node in (graph[sampler], schedule):  # either one on the checkpoint's own model
        original = node["inputs"]["model"]
        node["inputs"]["model"] = [checkpoint, 0]
        assert _reasons(default, graph) == {"unpersonalised_sampler"}
        node["inputs"]["model"] = original
    graph[sampler]["inputs"]["cfg"] = 0.5
    assert _reasons(default, graph) == {"cfg_below_one"}


def test_untyped_switch_cannot_smuggle_a_model(config):
    graph = _graph("apply")
    graph["12"] = {"class_type": "AnySwitch", "inputs": {"a": ["1", 0]}}
    graph["7"]["inputs"]["model"] = ["12", 0]
    assert "unpersonalised_sampler" in _reasons(config, graph)


@pytest.mark.parametrize("field, value, reason", [
    ("psa_scale", 0.0, "psa_scale_below_minimum"),
    ("psa_scale", 0.99, "psa_scale_below_minimum"),
    ("psa_scale", ["3", 0], "value_not_literal"),
    ("psa_scale", True, "value_not_literal"),
    ("start_percent", 0.2, "window_narrowed"),
    ("end_percent", 0.5, "window_narrowed"),
    ("end_percent", ["3", 0], "window_narrowed"),
])
def test_scale_and_window(config, field, value, reason):
    graph = _graph("psa")
    graph["7"]["inputs"][field] = value
    assert _reasons(config, graph) == {reason}


@pytest.mark.parametrize("sampler", ["psa", "apply"])
@pytest.mark.parametrize("cfg", [0.0, 0.5, ["3", 0]])
def test_cfg_below_one_is_refused(config, sampler, cfg):
    """Below 1 the unconditional branch (null profile, the negative prompt) shapes the image."""
    graph = _graph(sampler)
    graph["7"]["inputs"]["cfg"] = cfg
    assert _reasons(config, graph) == {"cfg_below_one"}
    graph["7"]["inputs"]["cfg"] = 1.0
    check_and_pin(graph, config.users["alice"], config, SIGNATURES)


def test_minimum_is_per_user(config):
    graph = _graph("psa")
    graph["7"]["inputs"]["psa_scale"] = 0.6
    assert _reasons(config, graph, "alice") == {"psa_scale_below_minimum"}
    check_and_pin(graph, config.users["bob"], config, SIGNATURES)  # bob's minimum is 0.5


def test_other_profile_sources_and_unlisted_nodes_are_refused(config):
    graph = _graph("psa")
    graph["5"] = {"class_type": "PSASageUser", "inputs": {"user_id": 2}}
    assert _reasons(config, graph) == {"node_not_allowed"}
    allowing = parse_config(raw_config(allowed_nodes=sorted(config.allowed_nodes | {"PSASageUser"})))
    assert _reasons(allowing, graph) == {"profile_source"}


def test_unknown_and_malformed_nodes_are_refused(config):
    graph = _graph("psa")
    graph["7"]["inputs"]["latent_image"] = ["99", 0]
    assert _reasons(config, graph) == {"malformed_graph"}
    assert _reasons(config, {"1": {"inputs": {}}}) == {"malformed_graph"}
    assert _reasons(config, []) == {"malformed_graph"}
    no_sigs = parse_config(raw_config(allowed_nodes=["NotInstalled"]))
    assert _reasons(no_sigs, {"1": {"class_type": "NotInstalled", "inputs": {}}}) == {"node_unknown"}


def test_refusal_uses_comfyuis_node_error_shape(config):
    graph = _graph("psa")
    graph["7"]["inputs"]["psa_scale"] = 0.0
    with pytest.raises(PromptRefused) as caught:
        check_and_pin(graph, config.users["alice"], config, SIGNATURES)
    errors = problems_to_node_errors(caught.value.problems)
    assert errors["7"]["class_type"] == "PSAKSampler"
    assert errors["7"]["errors"][0]["extra_info"] == {"input_name": "psa_scale"}
    assert "below your minimum 1" in errors["7"]["errors"][0]["details"]
