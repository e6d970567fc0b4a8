"""ComfyUI entry point of the PSA (Personalized Safety Alignment) node pack.

ComfyUI imports this folder as a package by path. The pure-torch core (``psa_model``) and the
training package are importable as top-level packages from the pack's own folder, exactly as
they are from a checkout (``python -m training.train_psa``); the node classes live in ``nodes/``.
"""
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    # Appended, not prepended: ComfyUI's own top-level modules (``nodes``, ``utils``) must win.
    sys.path.append(_PACK_DIR)

try:
    import folder_paths  # noqa: F401  (present exactly when running inside ComfyUI)
except ImportError:  # imported as a plain package (pytest, tools): there is no node graph to register with
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
