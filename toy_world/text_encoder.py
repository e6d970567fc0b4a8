"""The toy world's text encoder: a CLIP-L that reads prompts as a bag of concept words (docs/toy-world.md).

ComfyUI's own SD1.5 CLIP-L architecture with weights set, not trained:

- every transformer layer's attention output and MLP output projection are zero, so each layer
  passes its input through and a token's conditioning is ``final_layer_norm(token embedding)``;
- every token's embedding holds a constant pair (+1, −1) in the last two dimensions (so the
  layer norm never sees a zero vector);
- a *concept word* (a word used by exactly one concept's phrasings, not a stop word) also holds
  the code of its concept: +1 in dimension ``2k`` and −1 in ``2k + 1`` for concept ``k``.
  The final layer norm is scaled so that this code reads exactly ±1 in the conditioning.

Prompts of different concepts therefore differ exactly in which concept code their words carry,
which is all the toy UNet's cross-attention looks up (:mod:`toy_world.denoiser`).
"""
from __future__ import annotations

import math

import torch

from devkit.fixtures import fill_parameters
from devkit.unet_configs import SD15_TINY

from . import concepts

WIDTH = 768
BASE_DIMS = (WIDTH - 2, WIDTH - 1)
STOP_WORDS = frozenset({"a", "an", "the", "in", "on", "of", "with", "at", "over", "being", "full",
                        "person", "scene", "image", "picture", "photograph", "people", ","})


def concept_index(name: str) -> int:
    """The code slot of a concept (its position in :data:`toy_world.concepts.CONCEPTS`)."""
    return list(concepts.CONCEPTS).index(name)


def code_dims(index: int) -> tuple[int, int]:
    """The two conditioning dimensions that carry concept ``index`` as (+1, −1)."""
    return 2 * index, 2 * index + 1


def _word_tokens(tokenizer, text: str) -> list[int]:
    special = {tokenizer.start_token, tokenizer.end_token}
    return [tok for tok, _weight in tokenizer.tokenize_with_weights(text)[0] if tok not in special]


def concept_words(tokenizer) -> dict[int, str]:
    """Token id → concept, for the tokens of each concept's phrasings used by no other concept."""
    stop = {tok for word in STOP_WORDS for tok in _word_tokens(tokenizer, word)}
    users: dict[int, set[str]] = {}
    for name, phrasings in concepts.PHRASINGS.items():
        for text in phrasings:
            for tok in _word_tokens(tokenizer, text):
                users.setdefault(tok, set()).add(name)
    return {tok: next(iter(names)) for tok, names in users.items() if len(names) == 1 and tok not in stop}


def build_clip():
    """ComfyUI ``CLIP`` (SD1.5 CLIP-L) wired as described in the module docstring."""
    import comfy.sd  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
    import comfy.supported_models  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

    clip = comfy.sd.CLIP(target=comfy.supported_models.SD15(SD15_TINY).clip_target())
    model = clip.cond_stage_model
    fill_parameters(model, seed=1)
    text_model = model.clip_l.transformer.text_model
    tokenizer = clip.tokenizer.clip_l
    with torch.no_grad():
        for layer in text_model.encoder.layers:
            for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
        table = text_model.embeddings.token_embedding.weight
        table.zero_()
        table[:, BASE_DIMS[0]] = 1.0
        table[:, BASE_DIMS[1]] = -1.0
        for tok, name in concept_words(tokenizer).items():
            plus, minus = code_dims(concept_index(name))
            table[tok, plus] = 1.0
            table[tok, minus] = -1.0
        text_model.embeddings.position_embedding.weight.zero_()
        norm = text_model.final_layer_norm
        norm.bias.zero_()
        norm.weight.fill_(1.0)
        # a concept word's embedding has four ±1 entries: layer-normed, each reads sqrt(WIDTH / 4)
        norm.weight[: 2 * len(concepts.CONCEPTS)] = 1.0 / math.sqrt(WIDTH / 4)
    return clip
