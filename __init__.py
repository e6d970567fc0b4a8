"""ComfyUI entry point of the PSA (Personalized Safety Alignment) node pack.

ComfyUI imports this folder as a package by path. The pure-torch core (``psa_model``) and the
training package are importable as top-level packages from the pack's own folder, exactly as
they are from a checkout (``python -m training.train_psa``); the node classes live in ``nodes/``
(``io.ComfyNode`` classes registered through ``comfy_entrypoint``).
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
    __all__: list[str] = []
else:
    # Operator mode (off unless PSA_OPERATOR_CONFIG is set) goes in first, so that a failure to load
    # the nodes still leaves its checks in place (docs/deployment.md).
    from .operator_mode import install_from_environment

    install_from_environment()
    # ComfyUI's versioned node schema: the loader calls comfy_entrypoint() for the node list. There is
    # deliberately no NODE_CLASS_MAPPINGS: the loader would take that (V1) path instead.
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
