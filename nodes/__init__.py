"""ComfyUI node classes of the PSA pack (a thin layer over ``psa_model``), on ComfyUI's versioned node schema.

Every node is an ``io.ComfyNode`` of ``comfy_api.latest`` (README, "Nodes"); ComfyUI
registers them through :func:`comfy_entrypoint`, which adds the pack's model folders to ComfyUI's
``folder_paths`` and returns the pack's ``ComfyExtension``. Importing any module of this package
has no side effect.
"""
from __future__ import annotations

import importlib

from comfy_api.latest import ComfyExtension, io

from . import folders

# Each module exports NODES = [node classes], in menu order.
_MODULES = ("adapter_nodes", "profile_nodes", "sampler_nodes", "image_nodes", "profile_encode_nodes", "save_nodes",
            "text_nodes", "reference_sampler_nodes")

NODE_LIST: list[type[io.ComfyNode]] = [cls for name in _MODULES
                                       for cls in importlib.import_module(f".{name}", __name__).NODES]


class PSAExtension(ComfyExtension):
    """The pack as a ComfyUI extension: its node list."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_LIST)


async def comfy_entrypoint() -> PSAExtension:
    """What ComfyUI's custom-node loader calls to register the pack's nodes (and, first, its model folders)."""
    folders.register()
    return PSAExtension()
