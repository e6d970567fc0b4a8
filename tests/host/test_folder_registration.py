"""The pack's model folders are registered by its entry point, all the same way; importing changes nothing.

Checked in a fresh interpreter: the pack's modules are imported by path as ComfyUI imports them,
then ``comfy_entrypoint`` is called as ComfyUI's loader calls it.
"""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = r"""
import asyncio, importlib, importlib.util, json, os, sys
from training.comfy_host import import_comfy
import_comfy()
import folder_paths
names = ("psa_adapters", "psa_profiles", "LLM", "psa_llm")
before = {n: n in folder_paths.folder_names_and_paths for n in names}
spec = importlib.util.spec_from_file_location("psa_pack_probe", os.path.join(sys.argv[1], "__init__.py"),
                                              submodule_search_locations=[sys.argv[1]])
pack = importlib.util.module_from_spec(spec)
sys.modules["psa_pack_probe"] = pack
spec.loader.exec_module(pack)
for name in ("adapter_nodes", "profile_nodes", "sampler_nodes", "image_nodes", "profile_encode_nodes", "save_nodes",
             "redaction", "folders"):
    importlib.import_module("psa_pack_probe.nodes." + name)
after_import = {n: n in folder_paths.folder_names_and_paths for n in names}
asyncio.run(pack.comfy_entrypoint())
asyncio.run(pack.comfy_entrypoint())  # twice: nothing is added twice
registered = {n: folder_paths.folder_names_and_paths[n][0] for n in names}
print(json.dumps({"before": before, "after_import": after_import, "registered": registered,
                  "models_dir": folder_paths.models_dir}))
"""


def test_import_has_no_side_effect_and_the_entry_point_registers_every_folder(comfy_host):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    names = ("psa_adapters", "psa_profiles", "LLM", "psa_llm")
    assert result["before"] == {n: False for n in names}
    assert result["after_import"] == {n: False for n in names}
    for name in names:
        paths = result["registered"][name]
        assert paths[0] == f"{result['models_dir']}/{name}" and paths.count(paths[0]) == 1, (name, paths)
