"""The PSA adapter: user projection plus per-layer user key/value projections (docs/reference-parity.md)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .layer_map import Architecture, architecture

REFERENCE_EMBED_DIM = 3584  # Qwen2.5-7B-Instruct hidden size (docs/reference-parity.md, "The user embedding")


@dataclass(frozen=True)
class AdapterConfig:
    """Shape of an adapter: everything needed to build it before loading weights."""

    arch: str
    layer_dims: tuple[int, ...]
    embed_dim: int = REFERENCE_EMBED_DIM
    cross_attention_dim: int = 0  # 0 → the architecture's text width
    user_tokens: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        arch = architecture(self.arch)
        if self.cross_attention_dim == 0:
            object.__setattr__(self, "cross_attention_dim", arch.cross_attention_dim)
        if len(self.layer_dims) != len(arch.sites):
            raise ValueError(
                f"{self.arch} adapters have {len(arch.sites)} layers, got {len(self.layer_dims)} layer widths"
            )
        if self.user_tokens < 1 or self.embed_dim < 1:
            raise ValueError(f"user_tokens and embed_dim must be positive, got {self.user_tokens}, {self.embed_dim}")

    @property
    def architecture(self) -> Architecture:
        return architecture(self.arch)


class UserProjection(nn.Module):
    """``tokens = LayerNorm(Linear(E → T·c)(e)).reshape(T, c)`` (docs/reference-parity.md, "The adapter")."""

    def __init__(self, embed_dim: int, cross_attention_dim: int, user_tokens: int) -> None:
        super().__init__()
        self.user_tokens = user_tokens
        self.cross_attention_dim = cross_attention_dim
        self.proj = nn.Linear(embed_dim, user_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[P, E] → [P, T, c]."""
        x = self.proj(embeddings).reshape(embeddings.shape[0], self.user_tokens, self.cross_attention_dim)
        return self.norm(x)


class UserKV(nn.Module):
    """One layer's ``to_k_user`` / ``to_v_user`` (bias-free, zero-initialised)."""

    def __init__(self, cross_attention_dim: int, inner_dim: int) -> None:
        super().__init__()
        self.to_k_user = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_v_user = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        nn.init.zeros_(self.to_k_user.weight)
        nn.init.zeros_(self.to_v_user.weight)


class PSAAdapter(nn.Module):
    """User projection + one :class:`UserKV` per cross-attention layer, in reference order."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.user_proj = UserProjection(config.embed_dim, config.cross_attention_dim, config.user_tokens)
        self.layers = nn.ModuleList(UserKV(config.cross_attention_dim, h) for h in config.layer_dims)

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """User embeddings [P, E] → user tokens [P, T, c]."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"profile embeddings have shape {tuple(embeddings.shape)} but this adapter expects "
                f"[profiles, {self.config.embed_dim}]; use profiles encoded for this adapter's embedding model"
            )
        weight = self.user_proj.proj.weight
        return self.user_proj(embeddings.to(device=weight.device, dtype=weight.dtype))

    def null_tokens(self) -> torch.Tensor:
        """The unconditional branch's tokens: ``projection(zeros(E))`` (docs/reference-parity.md). [1, T, c]."""
        weight = self.user_proj.proj.weight
        return self.project(torch.zeros(1, self.config.embed_dim, device=weight.device, dtype=weight.dtype))

    def keys_values(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer ``(K_user, V_user)``, each [P, T, h], for user tokens [P, T, c]."""
        return [(layer.to_k_user(tokens), layer.to_v_user(tokens)) for layer in self.layers]


def adapter_config_for_model(arch_name: str, sites_to_modules: dict, embed_dim: int = REFERENCE_EMBED_DIM,
                             user_tokens: int = 1) -> AdapterConfig:
    """An :class:`AdapterConfig` whose layer widths are read from a model's ``attn2`` modules."""
    dims = tuple(int(m.to_q.weight.shape[0]) for m in sites_to_modules.values())
    return AdapterConfig(arch=arch_name, layer_dims=dims, embed_dim=embed_dim, user_tokens=user_tokens)
