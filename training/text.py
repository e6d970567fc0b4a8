"""Captions → ComfyUI conditioning for training, read literally, with a bounded cache.

Captions are data, not prompts: ``( )``, ``[ ]``, ``\\`` and ``embedding:`` are ordinary text
here. The caption goes straight through each text encoder's own CLIP tokenizer (the one ComfyUI
loaded with the checkpoint) and the resulting token ids, all with weight 1.0, go to
``clip.encode_from_tokens`` — ComfyUI's prompt parser is never involved
(:mod:`psa_model.text_tokens`, shared with the PSA Text Encode (literal) node). Two caption modes
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

from psa_model.text_tokens import CAPTION_MODES, caption_windows, literal_tokens  # noqa: F401 - re-exported


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
