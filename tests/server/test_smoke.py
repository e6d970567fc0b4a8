"""The pack loads in a real ComfyUI server without import errors and registers its nodes."""
from __future__ import annotations

EXPECTED_NODES = {"PSAModelPatcher", "PSALoadProfile", "PSASageUser", "PSAProfilePreset", "PSAProfileBatch",
                  "PSAApplyProfile", "PSAKSampler"}


def test_pack_imports_without_errors(comfy_server):
    # By the pack's path in ComfyUI's import table: ComfyUI's own optional nodes that fail without
    # torchaudio must not count, even when the checkout holding the host tree is named ComfyUI-PSA.
    assert comfy_server.pack_imported() is True, f"{comfy_server.pack_path} did not import cleanly"
    info = comfy_server.get_json("/object_info")
    modules = {info[name]["python_module"] for name in EXPECTED_NODES}
    assert modules == {f"custom_nodes.{comfy_server.pack_path.name}"}, modules


def test_object_info_lists_the_nodes(comfy_server):
    info = comfy_server.get_json("/object_info")
    assert EXPECTED_NODES <= set(info)
    for name in EXPECTED_NODES:
        node = info[name]
        assert node["category"].startswith("PSA")
        for spec in list(node["input"]["required"].values()) + list(node["input"].get("optional", {}).values()):
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}: an input has no tooltip"


def _options(spec: list) -> list:
    """A combo's choices: ``[choices, {...}]`` (V1 form) or ``["COMBO", {"options": choices}]`` (node schema)."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_adapter_and_profile_folders_are_listed(comfy_server):
    info = comfy_server.get_json("/object_info/PSAModelPatcher")["PSAModelPatcher"]
    assert "psa_demo_sd15.safetensors" in _options(info["input"]["required"]["adapter_name"])
    profiles = _options(comfy_server.get_json("/object_info/PSALoadProfile")["PSALoadProfile"]["input"]["required"]
                        ["profile_name"])
    assert {"demo_child.json", "demo_adult.npy"} <= set(profiles)
    assert not any("sage_embeddings" in p for p in profiles)
