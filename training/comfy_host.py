"""Import ComfyUI's library code (``comfy``) from a ComfyUI tree outside a running server.

Training, the fixture builder and the host-library tests all run ComfyUI's own model code
in-process. The tree is ``$COMFYUI_PATH`` or the one ``scripts/provision.sh`` caches under
``.cache/host/ComfyUI``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST = REPO_ROOT / ".cache" / "host" / "ComfyUI"


def comfyui_path() -> Path:
    """The ComfyUI tree to use: ``$COMFYUI_PATH`` if set, else the provisioned cache."""
    raw = os.environ.get("COMFYUI_PATH")
    path = Path(raw).expanduser() if raw else DEFAULT_HOST
    if not (path / "main.py").is_file() or not (path / "comfy").is_dir():
        origin = f"COMFYUI_PATH={raw}" if raw else f"the provisioned host {path}"
        raise FileNotFoundError(
            f"{origin} is not a ComfyUI tree (no main.py or comfy/ there); "
            "run `bash scripts/provision.sh` or point COMFYUI_PATH at a ComfyUI folder"
        )
    return path


def import_comfy(force_cpu: bool | None = None) -> Path:
    """Put the ComfyUI tree on ``sys.path`` and configure it before ``comfy`` is imported.

    ``force_cpu`` defaults to "no CUDA available": ComfyUI's model management must be told
    ``--cpu`` before its first import or it tries to initialise CUDA and fails.
    """
    path = comfyui_path()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    if "comfy.model_management" not in sys.modules:
        import comfy.cli_args  # noqa: PLC0415 - must precede comfy.model_management

        if force_cpu is None:
            import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import

            force_cpu = not torch.cuda.is_available()
        comfy.cli_args.args.cpu = bool(force_cpu)
    return path
