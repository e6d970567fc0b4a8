"""The one table that maps PSA adapter layers to ComfyUI UNet cross-attention sites.

docs/reference-parity.md, "The adapter" (layer order): the adapter's layer ``i`` is the i-th cross-attention
(``attn2``) in diffusers' ``unet.attn_processors`` order — all down blocks, then all up
blocks, then the mid block last. ComfyUI names the same layers by
``(block_name, block_id, block_index)``: ``block_name`` in {"input", "middle", "output"},
``block_id`` the index in ``input_blocks``/``output_blocks`` (0 for the middle block) and
``block_index`` the transformer's index inside that block's ``SpatialTransformer``.
These are exactly the keys ComfyUI passes to attention patches as
``extra_options["block"]`` and ``extra_options["block_index"]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerSite:
    """One cross-attention layer, named the way ComfyUI's attention patches see it."""

    block_name: str
    block_id: int
    block_index: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.block_name, self.block_id, self.block_index)

    def __str__(self) -> str:
        return f"{self.block_name}_blocks.{self.block_id}[{self.block_index}]"


@dataclass(frozen=True)
class Architecture:
    """A base-model family: its text cross-attention width and adapter layer order."""

    name: str
    cross_attention_dim: int
    sites: tuple[LayerSite, ...]
    reference_inner_dims: tuple[int, ...]  # the full-size model's per-layer width (docs, checks)


def _sites(spec: list[tuple[str, int, int, int]]) -> tuple[tuple[LayerSite, ...], tuple[int, ...]]:
    sites, dims = [], []
    for block_name, block_id, depth, inner_dim in spec:
        for block_index in range(depth):
            sites.append(LayerSite(block_name, block_id, block_index))
            dims.append(inner_dim)
    return tuple(sites), tuple(dims)


# (block_name, block_id, transformer depth, inner dim of the full-size model), reference order.
_SD15_SPEC = [
    ("input", 1, 1, 320), ("input", 2, 1, 320),
    ("input", 4, 1, 640), ("input", 5, 1, 640),
    ("input", 7, 1, 1280), ("input", 8, 1, 1280),
    ("output", 3, 1, 1280), ("output", 4, 1, 1280), ("output", 5, 1, 1280),
    ("output", 6, 1, 640), ("output", 7, 1, 640), ("output", 8, 1, 640),
    ("output", 9, 1, 320), ("output", 10, 1, 320), ("output", 11, 1, 320),
    ("middle", 0, 1, 1280),
]
_SDXL_SPEC = [
    ("input", 4, 2, 640), ("input", 5, 2, 640),
    ("input", 7, 10, 1280), ("input", 8, 10, 1280),
    ("output", 0, 10, 1280), ("output", 1, 10, 1280), ("output", 2, 10, 1280),
    ("output", 3, 2, 640), ("output", 4, 2, 640), ("output", 5, 2, 640),
    ("middle", 0, 10, 1280),
]

ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture("sd15", 768, *_sites(_SD15_SPEC)),
    "sdxl": Architecture("sdxl", 2048, *_sites(_SDXL_SPEC)),
}


def architecture(name: str) -> Architecture:
    """Look up an architecture by name ("sd15" or "sdxl")."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown PSA architecture {name!r}; expected one of {sorted(ARCHITECTURES)}") from None


def architecture_for_layer_count(count: int) -> Architecture:
    """The architecture whose adapter has ``count`` layers (16 → SD1.5, 70 → SDXL)."""
    for arch in ARCHITECTURES.values():
        if len(arch.sites) == count:
            return arch
    known = ", ".join(f"{a.name}={len(a.sites)}" for a in ARCHITECTURES.values())
    raise ValueError(f"no known architecture has {count} cross-attention layers ({known})")


def _block_container(diffusion_model: torch.nn.Module, block_name: str, block_id: int) -> torch.nn.Module:
    if block_name == "middle":
        return diffusion_model.middle_block
    blocks = getattr(diffusion_model, f"{block_name}_blocks")
    return blocks[block_id]


def find_cross_attention_sites(diffusion_model: torch.nn.Module) -> dict[LayerSite, torch.nn.Module]:
    """Every text cross-attention module (``attn2``) of a ComfyUI ``UNetModel``, by site.

    Duck-typed on the module tree (``input_blocks``/``middle_block``/``output_blocks``, then a
    child with ``transformer_blocks``) so this module needs no ComfyUI import.
    """
    found: dict[LayerSite, torch.nn.Module] = {}
    groups = [("input", i, b) for i, b in enumerate(getattr(diffusion_model, "input_blocks", []))]
    if hasattr(diffusion_model, "middle_block"):
        groups.append(("middle", 0, diffusion_model.middle_block))
    groups += [("output", i, b) for i, b in enumerate(getattr(diffusion_model, "output_blocks", []))]
    for block_name, block_id, block in groups:
        for child in block.children():
            for block_index, tblock in enumerate(getattr(child, "transformer_blocks", [])):
                attn2 = getattr(tblock, "attn2", None)
                if attn2 is not None:
                    found[LayerSite(block_name, block_id, block_index)] = attn2
    return found


def match_sites(arch: Architecture, diffusion_model: torch.nn.Module) -> dict[LayerSite, torch.nn.Module]:
    """The model's cross-attention modules in adapter order; raise if the two do not match.

    Fail-closed (README: Nodes, PSA Model Patcher): an adapter that cannot reach every layer it has
    is refused. Every adapter layer must exist in the model and every cross-attention layer of the
    model must be covered.
    """
    found = find_cross_attention_sites(diffusion_model)
    wanted = set(arch.sites)
    missing = [str(s) for s in arch.sites if s not in found]
    extra = [str(s) for s in found if s not in wanted]
    if missing or extra:
        raise ValueError(
            f"the {arch.name} PSA adapter ({len(arch.sites)} layers) does not fit this UNet "
            f"({len(found)} cross-attention layers): adapter layers missing in the model: "
            f"{missing[:6] or 'none'}; model layers the adapter does not cover: {extra[:6] or 'none'}. "
            "Use an adapter trained for this base model family."
        )
    return {s: found[s] for s in arch.sites}
