"""PSA Save Image (redacted): ComfyUI's Save Image, minus profile attributes in the PNG metadata.

The prompt and workflow ComfyUI embeds in every PNG hold the values typed into widgets, so a
profile's age or conditions typed into PSA Profile Policy end up in every image. This node writes
the same PNGs as Save Image with those values replaced by ``<redacted>`` (docs/security.md,
"Privacy"). The rest of the metadata stays, so the image still opens as a workflow.
"""
from __future__ import annotations

import nodes as comfy_nodes

from .adapter_nodes import CATEGORY
from .redaction import redact_extra_pnginfo, redact_prompt


class PSASaveImageRedacted:
    DESCRIPTION = ("Saves images like Save Image, but replaces the profile attributes (PSA Profile Policy's age, "
                   "gender, religion, conditions, forbidden list; PSA Sage User's user_id) in the embedded "
                   "prompt and workflow with <redacted>. Use ComfyUI's --disable-metadata to store no metadata.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to save."}),
            "filename_prefix": ("STRING", {"default": "PSA", "tooltip": "Prefix of the saved file names (do not "
                                           "put attributes here: the name is not redacted)."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, images, filename_prefix="PSA", prompt=None, extra_pnginfo=None):
        return comfy_nodes.SaveImage().save_images(images, filename_prefix, prompt=redact_prompt(prompt),
                                                   extra_pnginfo=redact_extra_pnginfo(extra_pnginfo))


NODES = {"PSASaveImageRedacted": (PSASaveImageRedacted, "PSA Save Image (redacted)")}
