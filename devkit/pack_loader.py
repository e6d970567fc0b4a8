"""Import this pack the way ComfyUI does: a package loaded by path, under a private module name.

The one loader for host-tier node tests and the toy world's library-mode runs (``nodes/`` uses
relative imports, so the pack must be imported as a package, not module by module).
"""
from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_MODULE = "comfyui_psa_pack_under_test"


def load_pack():
    """The pack's top-level module, its ``comfy_entrypoint`` called once as ComfyUI's loader calls it
    (which registers the pack's model folders). ComfyUI's tree must already be importable."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    asyncio.run(module.comfy_entrypoint())
    return module


def node_class(node_id: str):
    """The pack's ``io.ComfyNode`` class with this node id, from the extension ComfyUI would register."""
    extension = asyncio.run(load_pack().comfy_entrypoint())
    classes = {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}
    return classes[node_id]
