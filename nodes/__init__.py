"""ComfyUI node classes of the PSA pack (a thin layer over ``psa_model``)."""
from __future__ import annotations

import importlib

from . import folders

folders.register()

# Each module exports NODES = {class_name: (class, display name)}.
_MODULES = ("adapter_nodes", "profile_nodes", "sampler_nodes", "image_nodes", "profile_encode_nodes", "save_nodes")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _name in _MODULES:
    _module = importlib.import_module(f".{_name}", __name__)
    for _key, (_cls, _display) in _module.NODES.items():
        NODE_CLASS_MAPPINGS[_key] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_key] = _display
