"""The pack loads in a real ComfyUI server without import errors and registers its nodes."""
from __future__ import annotations

EXPECTED_NODES = {"PSAModelPatcher", "PSALoadProfile", "PSASageUser", "PSAProfilePreset", "PSAProfileBatch",
                  "PSAApplyProfile", "PSAKSampler"}


def test_pack_imports_without_errors(comfy_server):
    log = comfy_server.log_text()
    assert "ComfyUI-PSA" in log  # listed among the custom nodes ComfyUI imported
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line or "Cannot import" in line]
    assert not [line for line in failed if "PSA" in line], failed


def test_object_info_lists_the_nodes(comfy_server):
    info = comfy_server.get_json("/object_info")
    assert EXPECTED_NODES <= set(info)
    for name in EXPECTED_NODES:
        node = info[name]
        assert node["category"].startswith("PSA")
        for spec in list(node["input"]["required"].values()) + list(node["input"].get("optional", {}).values()):
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}: an input has no tooltip"


def test_adapter_and_profile_folders_are_listed(comfy_server):
    info = comfy_server.get_json("/object_info/PSAModelPatcher")["PSAModelPatcher"]
    assert "psa_demo_sd15.safetensors" in info["input"]["required"]["adapter_name"][0]
    profiles = comfy_server.get_json("/object_info/PSALoadProfile")["PSALoadProfile"]["input"]["required"]
    assert {"demo_child.json", "demo_adult.npy"} <= set(profiles["profile_name"][0])
    assert not any("sage_embeddings" in p for p in profiles["profile_name"][0])
