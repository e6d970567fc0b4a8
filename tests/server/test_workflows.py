"""Every shipped workflow runs in the real server against the fixtures; UI files match their API twins."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from devkit.comfy_server import ServerError
from devkit.workflows import shipped_workflows, strip_meta, substitute, ui_to_api

WORKFLOWS = shipped_workflows()
FIXTURE_NAMES = {  # workflow → (checkpoint, adapter) among the fixtures
    "psa_sdxl_basic": ("sdxl_tiny.safetensors", "psa_demo_sdxl.safetensors"),
    "psa_sdxl_reference": ("sdxl_tiny.safetensors", "psa_demo_sdxl.safetensors"),
}
DEFAULT_NAMES = ("sd15_tiny.safetensors", "psa_demo_sd15.safetensors")
PROFILES = ["demo_child.json", "demo_teen.json", "demo_adult.json"]


REFERENCE_NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"


def test_the_workflows_are_shipped():
    assert {"psa_sd15_basic", "psa_sdxl_basic", "psa_multi_profile_comparison", "psa_any_sampler",
            "psa_sd15_reference", "psa_sdxl_reference"} <= set(WORKFLOWS)


REFERENCE_ROUTES = {  # PSA Apply Profile → SamplerCustom with the reference's sampler and schedule
    "psa_sd15_reference": ({"class_type": "PSAPLMSSampler", "inputs": {"scaling": "diffusers"}},
                           "PSAPLMSSchedule", {"steps": 50}),
    "psa_sdxl_reference": ({"class_type": "PSAEulerSampler", "inputs": {"scaling": "diffusers"}},
                           "BasicScheduler", {"scheduler": "ddim_uniform", "steps": 50, "denoise": 1.0}),
}


@pytest.mark.parametrize("name", ["psa_sd15_reference", "psa_sdxl_reference"])
def test_reference_workflows_sample_with_the_reference_settings(name):
    """docs/reference-parity.md, "Sampling": guidance 7.5, 50 steps, seed 2025, the reference's
    negative prompt; PLMS on its own schedule (SD1.5) / Euler on ddim_uniform (SDXL), both from
    diffusers' start scale."""
    api = json.loads(WORKFLOWS[name][1].read_text())
    by_type = {n["class_type"]: n["inputs"] for n in api.values()}
    sampler_inputs, apply = by_type["SamplerCustom"], by_type["PSAApplyProfile"]
    assert (sampler_inputs["cfg"], sampler_inputs["noise_seed"], sampler_inputs["add_noise"]) == (7.5, 2025, True)
    assert (apply["psa_scale"], apply["start_percent"], apply["end_percent"]) == (1.0, 0.0, 1.0)
    assert api[sampler_inputs["model"][0]]["class_type"] == "PSAApplyProfile"
    sampler, schedule_type, schedule_settings = REFERENCE_ROUTES[name]
    assert api[sampler_inputs["sampler"][0]] == sampler
    schedule = api[sampler_inputs["sigmas"][0]]
    assert schedule["class_type"] == schedule_type
    assert {k: schedule["inputs"][k] for k in schedule_settings} == schedule_settings
    assert api[schedule["inputs"]["model"][0]]["class_type"] == "PSAApplyProfile"
    route = {"PSAApplyProfile", "SamplerCustom", sampler["class_type"], schedule_type}
    negative = api[str(sampler_inputs["negative"][0])]["inputs"]["text"]
    assert negative == REFERENCE_NEGATIVE
    basic = json.loads(WORKFLOWS[name.replace("reference", "basic")][1].read_text())
    profile_nodes = {"PSALoadProfile", "PSAProfilePreset"}
    assert {n["class_type"] for n in api.values()} == \
        ({n["class_type"] for n in basic.values()} - {"CLIPTextEncode", "PSAKSampler"} - profile_nodes) | \
        {"PSATextEncodeLiteral", "PSAProfilePreset"} | route
    # prompts read literally and cut at 77 tokens, as the reference's pipelines read them
    assert [n["inputs"]["mode"] for n in api.values() if n["class_type"] == "PSATextEncodeLiteral"] == ["truncate"] * 2
    # a published Sage user, as in the paper's levels (docs/reference-parity.md, "Sampling")
    assert [n["inputs"]["preset"] for n in api.values() if n["class_type"] == "PSAProfilePreset"] == \
        ["level 3 (Sage user 0000002)"]


def test_ddim_uniform_gives_the_leading_timesteps_of_the_reference_schedulers(sd15_checkpoint):
    """diffusers' "leading" spacing with steps_offset 1 (SD1.5 PNDM and SDXL Euler discrete):
    timesteps 1, 1 + 1000/n, … in reverse — the timesteps ComfyUI's ddim_uniform scheduler picks."""
    import comfy.samplers

    sampling = sd15_checkpoint[0].get_model_object("model_sampling")
    for steps in (50, 40):
        sigmas = comfy.samplers.calculate_sigmas(sampling, "ddim_uniform", steps)
        timesteps = [round(float(t)) for t in sampling.timestep(sigmas[:-1])]
        ratio = 1000 // steps
        assert timesteps == [i * ratio + 1 for i in range(steps)][::-1], steps
        assert float(sigmas[-1]) == 0.0


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_ui_file_matches_api_twin(name, comfy_server):
    ui_path, api_path = WORKFLOWS[name]
    object_info = comfy_server.get_json("/object_info")
    assert ui_to_api(json.loads(ui_path.read_text()), object_info) == strip_meta(json.loads(api_path.read_text()))


def _run(server, name, profiles=PROFILES, size=64, overrides=None):
    checkpoint, adapter = FIXTURE_NAMES.get(name, DEFAULT_NAMES)
    api = substitute(json.loads(WORKFLOWS[name][1].read_text()), checkpoint, adapter, list(profiles), size, steps=3)
    for (node_id, key), value in (overrides or {}).items():
        api[node_id]["inputs"][key] = value
    entry = server.run(api, timeout=600)
    return entry, [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in server.images(entry)]


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_shipped_workflow_runs(name, comfy_server):
    _, images = _run(comfy_server, name)
    assert len(images) == 1
    expected_width = 3 * 64 + 2 * 4 if name == "psa_multi_profile_comparison" else 64
    assert images[0].shape == (64, expected_width, 3)
    assert images[0].std() > 1.0  # not a blank image


def test_comparison_grid_differs_per_profile(comfy_server):
    _, (grid,) = _run(comfy_server, "psa_multi_profile_comparison")
    tiles = [grid[:, i * 68: i * 68 + 64].astype(float) for i in range(3)]
    assert all(np.abs(tiles[i] - tiles[j]).mean() > 1.0 for i in range(3) for j in range(i + 1, 3))


def test_profile_change_reuses_the_patched_model(comfy_server):
    """Only the profile changed → loader and PSA Model Patcher come from the execution cache."""
    _run(comfy_server, "psa_sd15_basic", profiles=["demo_child.json"])
    entry, _ = _run(comfy_server, "psa_sd15_basic", profiles=["demo_adult.json"])
    cached = next(data["nodes"] for kind, data in entry["status"]["messages"] if kind == "execution_cached")
    assert {"1", "2"} <= set(cached)


@pytest.mark.parametrize("profile, override, message", [
    ("demo_child.json", {("5", "profile_name"): "no_such_profile.json"}, "profile_name"),
    ("demo_child.json", {("2", "adapter_name"): "psa_demo_sdxl.safetensors"}, "does not fit this UNet"),
    ("bad_nan.npy", {}, "NaN or Inf"),
    ("bad_dim.npy", {}, "expects"),
])
def test_bad_input_is_a_node_error_and_server_keeps_serving(comfy_server, server_models_dir, profile, override,
                                                             message):
    np.save(server_models_dir / "psa_profiles" / "bad_nan.npy", np.full(3584, np.nan, dtype=np.float32))
    np.save(server_models_dir / "psa_profiles" / "bad_dim.npy", np.ones(100, dtype=np.float32))
    with pytest.raises(ServerError, match=message):
        _run(comfy_server, "psa_sd15_basic", profiles=[profile], overrides=override)
    _, images = _run(comfy_server, "psa_sd15_basic", profiles=["demo_child.json"])
    assert images
