"""PSA Save Image (redacted): ComfyUI's Save Image, minus profile attributes in the PNG metadata.

The prompt and workflow ComfyUI embeds in every PNG hold the values typed into widgets, so a
profile's age or conditions typed into PSA Profile Policy end up in every image. This node writes
the same PNGs as Save Image with those values replaced by ``<redacted>`` (docs/security.md,
"Privacy"). The rest of the metadata stays, so the image still opens as a workflow.
"""
from __future__ import annotations

import nodes as comfy_nodes
from comfy_api.latest import io

from .adapter_nodes import CATEGORY
from .profile_encode_nodes import PSAProfilePolicy
from .redaction import redact_extra_pnginfo, redact_prompt


def policy_source_choices() -> tuple[str, ...]:
    """PSA Profile Policy's ``forbidden_source`` choices, read from the node's own schema (never a copy)."""
    (source,) = [i for i in PSAProfilePolicy.define_schema().inputs if i.id == "forbidden_source"]
    return tuple(source.options)


class PSASaveImageRedacted(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSASaveImageRedacted",
            display_name="PSA Save Image (redacted)",
            category=CATEGORY,
            description=("Saves images like Save Image, but replaces the profile attributes (PSA Profile Policy's "
                         "age, gender, religion, conditions, forbidden list; PSA Sage User's user_id) in the embedded "
                         "prompt and workflow with <redacted>. Use ComfyUI's --disable-metadata to store no "
                         "metadata."),
            inputs=[
                io.Image.Input("images", tooltip="The images to save."),
                io.String.Input("filename_prefix", default="PSA",
                                tooltip="Prefix of the saved file names (do not put attributes here: the name is not "
                                        "redacted)."),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, filename_prefix: str = "PSA") -> io.NodeOutput:
        saved = comfy_nodes.SaveImage().save_images(images, filename_prefix, prompt=redact_prompt(cls.hidden.prompt),
                                                    extra_pnginfo=redact_extra_pnginfo(cls.hidden.extra_pnginfo,
                                                                                       policy_source_choices()))
        return io.NodeOutput(ui=saved["ui"])


NODES = [PSASaveImageRedacted]
