"""Prompt text → CLIP token ids read literally, as the reference's pipelines and training read them.

``docs/reference-parity.md``, "Captions" and "Prompts at inference". ComfyUI's prompt parser reads
``( )`` / ``[ ]`` as weights, ``\\`` as an escape and ``embedding:`` as a textual-inversion name,
and splits long prompts into several 77-token windows. Here the text goes straight through each
text encoder's own CLIP tokenizer and every token gets weight 1.0, in the structure
``clip.encode_from_tokens`` takes. The ComfyUI objects are only read through their attributes
(no ComfyUI import): a CLIP tokenizer holds its per-encoder tokenizers as ``clip_l`` / ``clip_g``,
each with the Hugging Face ``tokenizer``, ``max_length``, start/end/pad tokens and
``tokens_start`` / ``tokenizer_adds_end_token``.

- ``truncate`` (the reference): start token, the first 75 text tokens, end token, padding (the
  end token for CLIP-L, zero for SDXL's CLIP-G, as each tokenizer pads) — one 77-token window.
- ``chunk``: every token, in consecutive 75-token windows each wrapped in start/end tokens.
"""
from __future__ import annotations

CAPTION_MODES = ("truncate", "chunk")


def _sub_tokenizers(tokenizer) -> dict[str, object]:
    """ComfyUI's per-encoder tokenizers of a CLIP object: ``{"l": …}`` (SD1.5) or ``{"g": …, "l": …}`` (SDXL).

    Both ComfyUI tokenizer classes hold their CLIP tokenizers as ``clip_<name>`` attributes, the
    key that ``encode_from_tokens`` expects.
    """
    subs = {name[len("clip_"):]: sub for name, sub in vars(tokenizer).items()
            if name.startswith("clip_") and hasattr(sub, "tokenizer") and hasattr(sub, "max_length")}
    if not subs:
        raise TypeError(f"{type(tokenizer).__name__} is not a CLIP tokenizer this pack knows (expected "
                        "clip_l / clip_g sub-tokenizers, as SD1.5 and SDXL checkpoints have)")
    return subs


def caption_windows(sub, caption: str, mode: str) -> list[list[int]]:
    """Token-id windows of one encoder for ``caption`` (each ``sub.max_length`` long, padded)."""
    if mode not in CAPTION_MODES:
        raise ValueError(f"caption mode {mode!r}: use one of {CAPTION_MODES}")
    ids = sub.tokenizer(caption)["input_ids"]
    ids = ids[sub.tokens_start:len(ids) - 1 if sub.tokenizer_adds_end_token else len(ids)]
    width = sub.max_length - (sub.start_token is not None) - (sub.end_token is not None)
    pieces = [ids[i:i + width] for i in range(0, len(ids), width)] or [[]]
    if mode == "truncate":
        pieces = pieces[:1]
    windows = []
    for piece in pieces:
        window = ([sub.start_token] if sub.start_token is not None else []) + piece
        if sub.end_token is not None:
            window.append(sub.end_token)
        window += [sub.pad_token] * (sub.max_length - len(window))
        windows.append(window)
    return windows


def literal_tokens(clip, caption: str, mode: str = "truncate") -> dict[str, list[list[tuple[int, float]]]]:
    """The token structure ``clip.encode_from_tokens`` takes, built without ComfyUI's prompt parser."""
    return {key: [[(t, 1.0) for t in w] for w in caption_windows(sub, caption, mode)]
            for key, sub in _sub_tokenizers(clip.tokenizer).items()}
