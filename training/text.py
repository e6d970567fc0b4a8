"""Captions → ComfyUI conditioning for training, read literally, with a bounded cache.

Captions are data, not prompts: ``( )``, ``[ ]``, ``\\`` and ``embedding:`` are ordinary text
here. The caption goes straight through each text encoder's own CLIP tokenizer (the one ComfyUI
loaded with the checkpoint) and the resulting token ids, all with weight 1.0, go to
``clip.encode_from_tokens`` — ComfyUI's prompt parser is never involved. Two caption modes
(see ``docs/reference-parity.md``, "Captions"):

- ``truncate`` (default, as the reference trains): start token, the first 75 caption tokens,
  end token, padding — one 77-token window; longer captions lose their tail.
- ``chunk``: the whole caption in consecutive 75-token windows, each wrapped in start/end
  tokens (ComfyUI's long-prompt layout, split at token boundaries). Conditionings of different
  lengths in one batch are repeated to their least common multiple of windows, which is what
  ComfyUI does when it batches conditionings of unequal length; repeating every key and value
  the same number of times leaves cross-attention's output unchanged.

Encoded conditionings are kept in a least-recently-used cache with a byte budget
(:class:`ByteBudgetCache`) so a full-size data set cannot exhaust memory.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

CAPTION_MODES = ("truncate", "chunk")


class ByteBudgetCache:
    """Least-recently-used map caption → conditioning tensors, bounded by ``max_bytes``.

    ``max_bytes = 0`` disables caching. ``bytes`` is the memory the cached tensors hold now,
    ``peak_bytes`` the most they held; ``hits``/``misses`` count lookups.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def size_of(value: dict[str, torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in value.values())

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple) -> dict[str, torch.Tensor] | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple, value: dict[str, torch.Tensor]) -> None:
        size = self.size_of(value)
        if size > self.max_bytes or key in self._items:
            return
        while self.bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= self.size_of(old)
        self._items[key] = value
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "bytes": self.bytes, "peak_bytes": self.peak_bytes,
                "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses}


def _sub_tokenizers(tokenizer) -> dict[str, object]:
    """ComfyUI's per-encoder tokenizers of a CLIP object: ``{"l": …}`` (SD1.5) or ``{"g": …, "l": …}`` (SDXL).

    Both ComfyUI tokenizer classes hold their CLIP tokenizers as ``clip_<name>`` attributes, the
    key that ``encode_from_tokens`` expects.
    """
    subs = {name[len("clip_"):]: sub for name, sub in vars(tokenizer).items()
            if name.startswith("clip_") and hasattr(sub, "tokenizer") and hasattr(sub, "max_length")}
    if not subs:
        raise TypeError(f"{type(tokenizer).__name__} is not a CLIP tokenizer this trainer knows (expected "
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


def repeat_to_common_length(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat each [1, L_i, C] conditioning along tokens to the least common multiple of the L_i."""
    lengths = [t.shape[1] for t in tensors]
    target = math.lcm(*lengths)
    return [t.repeat(1, target // t.shape[1], 1) if t.shape[1] != target else t for t in tensors]


class TextEncoder:
    """Caption → conditioning kwargs for ComfyUI's ``apply_model`` (frozen encoders, bounded cache).

    SD1.5: ``c_crossattn`` from CLIP-L. SDXL: both encoders' penultimate states (2048) and
    ``y`` = pooled output + size/crop ids through the model's own ``encode_adm``, with original
    and target size = the training resolution and crop (0, 0), as the reference trains
    (``docs/reference-parity.md``).
    """

    def __init__(self, base, resolution: int, mode: str = "truncate", cache_bytes: int = 512 * 2**20) -> None:
        if mode not in CAPTION_MODES:
            raise ValueError(f"caption mode {mode!r}: use one of {CAPTION_MODES}")
        self.base = base
        self.resolution = resolution
        self.mode = mode
        self.cache = ByteBudgetCache(cache_bytes)

    @torch.no_grad()
    def encode(self, caption: str) -> dict[str, torch.Tensor]:
        key = (self.mode, caption)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        clip = self.base.clip
        cond, pooled = clip.encode_from_tokens(literal_tokens(clip, caption, self.mode), return_pooled=True)
        out = {"c_crossattn": cond.float().cpu()}
        if self.base.arch == "sdxl":
            r = self.resolution
            y = self.base.model.model.encode_adm(pooled_output=pooled, width=r, height=r, crop_w=0, crop_h=0,
                                                 target_width=r, target_height=r, device=torch.device("cpu"))
            out["y"] = y.float().cpu()
        self.cache.put(key, out)
        return out

    def batch(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Conditionings of several captions as one batch (token lengths made equal, see module doc)."""
        encoded = [self.encode(c) for c in captions]
        out = {k: torch.cat([e[k] for e in encoded]) for k in encoded[0] if k != "c_crossattn"}
        out["c_crossattn"] = torch.cat(repeat_to_common_length([e["c_crossattn"] for e in encoded]))
        return out
