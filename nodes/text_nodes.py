"""PSA Text Encode (literal): a prompt encoded the way the reference's pipelines encode it.

``docs/reference-parity.md``, "Prompts at inference": no weighting syntax, no escapes, no
textual-inversion names, one 77-token window (the tail of a longer prompt is dropped); on SDXL both
text encoders' penultimate states and CLIP-G's projected pooled output, as ComfyUI's SDXL text
encoder builds them from the same tokens. The tokens come from :mod:`psa_model.text_tokens`, the
same code that reads training captions.
"""
from __future__ import annotations

from comfy_api.latest import io

from psa_model.text_tokens import CAPTION_MODES, literal_tokens

from .adapter_nodes import CATEGORY


class PSATextEncodeLiteral(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSATextEncodeLiteral", display_name="PSA Text Encode (literal)", category=CATEGORY,
            description="Encodes a prompt literally, as the PSA reference pipelines and the trainer read text: "
                        "( ) [ ] \\ and embedding: are plain text, and the prompt is cut at 77 tokens (truncate) "
                        "or kept in 77-token windows (chunk). Use it to compare with the reference's images.",
            inputs=[
                io.String.Input("text", multiline=True, dynamic_prompts=False,
                                tooltip="The prompt, read literally (no weights, no {a|b} choices)."),
                io.Clip.Input("clip", tooltip="The checkpoint's text encoder(s)."),
                io.Combo.Input("mode", options=list(CAPTION_MODES), default="truncate",
                               tooltip="truncate: the first 75 tokens between start and end token, as the "
                                       "reference; chunk: every token, in 77-token windows."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The prompt's conditioning (with SDXL's pooled output).")])

    @classmethod
    def execute(cls, text: str, clip, mode: str = "truncate") -> io.NodeOutput:
        if clip is None:
            raise RuntimeError("PSA Text Encode (literal): the clip input is empty; connect the CLIP output of a "
                               "checkpoint loader whose checkpoint has a text encoder")
        try:
            tokens = literal_tokens(clip, text, mode)
        except TypeError as exc:
            raise RuntimeError(f"PSA Text Encode (literal) works with SD1.5 and SDXL text encoders: {exc}") from None
        return io.NodeOutput(clip.encode_from_tokens_scheduled(tokens))


NODES = [PSATextEncodeLiteral]
