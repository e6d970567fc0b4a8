"""PSA Model Patcher: MODEL + adapter file → MODEL with PSA cross-attention on every ``attn2``."""
from __future__ import annotations

import functools
import os
from pathlib import Path

from comfy_api.latest import io

from psa_model.formats.adapter_file import load_adapter
from psa_model.adapter.patch import attach_adapter

from . import folders

CATEGORY = "PSA (personalized safety)"


@functools.lru_cache(maxsize=4)
def _cached_adapter(path: str, mtime_ns: int, size: int):
    # Keyed on mtime and size too: a retrained file at the same path is reloaded.
    return load_adapter(Path(path))


def load_adapter_file(name: str):
    """The adapter in ``models/psa_adapters`` called ``name`` (cached while the file is unchanged)."""
    path = folders.full_path(folders.ADAPTERS, name)
    stat = os.stat(path)
    return _cached_adapter(str(path), stat.st_mtime_ns, stat.st_size)


class PSAModelPatcher(io.ComfyNode):
    """Adds the adapter's user cross-attention to a copy of the model (the input MODEL is untouched)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAModelPatcher",
            display_name="PSA Model Patcher",
            category=CATEGORY,
            description=("Loads a PSA adapter from models/psa_adapters and adds its user cross-attention layers to "
                         "every cross-attention layer of the UNet. Follow it with PSA Apply Profile or PSA KSampler."),
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5 or SDXL model (LoRAs may be applied before or after)."),
                io.Combo.Input("adapter_name", options=folders.adapter_files(),
                               tooltip="PSA adapter file in models/psa_adapters: native .safetensors, reference "
                                       "psa_adapter.bin or its .safetensors variant."),
            ],
            outputs=[io.Model.Output(display_name="psa_model",
                                     tooltip="The model with PSA layers; it needs a profile before sampling.")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name) -> bool | str:
        return folders.check_choice("adapter_name", adapter_name, folders.adapter_files(), "models/psa_adapters")

    @classmethod
    def execute(cls, model, adapter_name: str) -> io.NodeOutput:
        return io.NodeOutput(attach_adapter(model, load_adapter_file(adapter_name)))

    @classmethod
    def fingerprint_inputs(cls, adapter_name: str, **_) -> str:
        return folders.file_fingerprint(folders.ADAPTERS, adapter_name)  # an edited file is reloaded


NODES = [PSAModelPatcher]
