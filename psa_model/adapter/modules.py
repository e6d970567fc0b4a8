"""The PSA adapter: user projection plus per-layer user key/value projections.

Semantics of the user branch for T user tokens and G key/value groups per layer:
``docs/user-tokens.md`` (per-group = the reference's, joint = this pack's multi-token training mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from .layer_map import Architecture, architecture

REFERENCE_EMBED_DIM = 3584  # Qwen2.5-7B-Instruct hidden size (docs/reference-parity.md, "The user embedding")
PER_GROUP = "per-group"  # the reference's: group g attends to user token g alone (docs/user-tokens.md)
JOINT = "joint"  # this pack's multi-token mode: one group attends to all T tokens at once
USER_ATTENTION_MODES = (PER_GROUP, JOINT)


def default_user_attention(user_tokens: int) -> str:
    """The semantics of an adapter that does not name one: per-group for T = 1 (where both modes
    agree), joint for T > 1 (what this pack's trainer wrote before the mode was recorded)."""
    return PER_GROUP if user_tokens == 1 else JOINT


@dataclass(frozen=True)
class AdapterConfig:
    """Shape of an adapter: everything needed to build it before loading weights."""

    arch: str
    layer_dims: tuple[int, ...]
    embed_dim: int = REFERENCE_EMBED_DIM
    cross_attention_dim: int = 0  # 0 → the architecture's text width
    user_tokens: int = 1
    user_groups: int = 1  # G: key/value projection pairs per layer (reference ``to_k_user.{g}``)
    user_attention: str = ""  # PER_GROUP or JOINT; "" → default_user_attention(user_tokens)
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        arch = architecture(self.arch)
        if self.cross_attention_dim == 0:
            object.__setattr__(self, "cross_attention_dim", arch.cross_attention_dim)
        if len(self.layer_dims) != len(arch.sites):
            raise ValueError(
                f"{self.arch} adapters have {len(arch.sites)} layers, got {len(self.layer_dims)} layer widths"
            )
        if self.user_tokens < 1 or self.embed_dim < 1 or self.user_groups < 1:
            raise ValueError(f"user_tokens, user_groups and embed_dim must be positive, got {self.user_tokens}, "
                             f"{self.user_groups}, {self.embed_dim}")
        if not self.user_attention:
            object.__setattr__(self, "user_attention", default_user_attention(self.user_tokens))
        if self.user_attention not in USER_ATTENTION_MODES:
            raise ValueError(f"user_attention must be one of {USER_ATTENTION_MODES}, got {self.user_attention!r}")
        if self.user_attention == JOINT and self.user_groups != 1:
            raise ValueError(f"joint user attention has one key/value group per layer, got {self.user_groups}")
        if self.user_groups > self.user_tokens:
            raise ValueError(
                f"the adapter has {self.user_groups} user key/value groups per layer but its projection makes "
                f"{self.user_tokens} user token(s); group g attends to token g, so groups "
                f"{self.user_tokens}..{self.user_groups - 1} would have no token (docs/user-tokens.md)"
            )

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

    @torch.no_grad()
    def standardize_on(self, embeddings: torch.Tensor, ridge: float = 0.1) -> None:
        """Initialise ``Linear(e)`` as ``W·C^(-1/2)·(e − ē)`` for the training embeddings' mean ē and
        covariance C (ridge-regularised, relative to its mean eigenvalue).

        What every training user shares is removed and their differences reach the layer norm
        with equal weight in every direction, so training starts from what tells users apart
        (docs/toy-world.md, "Preference pairs and the adapter").
        """
        x = embeddings.double()
        mean = x.mean(dim=0)
        centred = x - mean
        cov = centred.T @ centred / max(len(x) - 1, 1)
        cov += torch.eye(cov.shape[0], dtype=cov.dtype) * ridge * cov.diagonal().mean().clamp(min=1e-12)
        vals, vecs = torch.linalg.eigh(cov)
        inv_sqrt = vecs @ torch.diag(vals.rsqrt()) @ vecs.T
        weight = self.proj.weight.double() @ inv_sqrt
        self.proj.weight.copy_(weight.to(self.proj.weight))
        self.proj.bias.copy_(-(weight @ mean).to(self.proj.bias))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[P, E] → [P, T, c]."""
        return self.norm(rearrange(self.proj(embeddings), "p (t c) -> p t c", t=self.user_tokens))


class UserKVPair(nn.Module):
    """One group's ``to_k_user`` / ``to_v_user`` (bias-free, zero-initialised)."""

    def __init__(self, cross_attention_dim: int, inner_dim: int) -> None:
        super().__init__()
        self.to_k_user = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_v_user = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        nn.init.zeros_(self.to_k_user.weight)
        nn.init.zeros_(self.to_v_user.weight)


class UserKV(UserKVPair):
    """One layer's user key/value projections: group 0 as ``to_k_user`` / ``to_v_user``, groups
    g ≥ 1 (reference files with several ``to_k_user.{g}``) as ``extra_groups[g - 1]``."""

    def __init__(self, cross_attention_dim: int, inner_dim: int, groups: int = 1) -> None:
        super().__init__(cross_attention_dim, inner_dim)
        self.extra_groups = nn.ModuleList(UserKVPair(cross_attention_dim, inner_dim) for _ in range(groups - 1))

    def pairs(self) -> list[UserKVPair]:
        """The groups in order (group g ↔ user token g in per-group attention)."""
        return [self, *self.extra_groups]


class PSAAdapter(nn.Module):
    """User projection + one :class:`UserKV` per cross-attention layer, in reference order."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.user_proj = UserProjection(config.embed_dim, config.cross_attention_dim, config.user_tokens)
        self.layers = nn.ModuleList(UserKV(config.cross_attention_dim, h, config.user_groups)
                                    for h in config.layer_dims)

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
        """Per layer ``(K_user, V_user)`` for user tokens [P, T, c] (docs/user-tokens.md).

        - joint: K, V [P, T, h] — one attention of the queries over all T tokens.
        - per-group: K [P, G, h] (group g's key of token g) and V [P, 1, h] = Σ_g ``to_v_user_g``
          (token g). Each group is an attention over a single key, whose softmax weight is exactly 1,
          so the branch is the sum of the groups' values at every query; the keys only matter
          through non-finite values (a NaN key makes the reference's softmax NaN).
        """
        if self.config.user_attention == JOINT:
            return [(layer.to_k_user(tokens), layer.to_v_user(tokens)) for layer in self.layers]
        out = []
        for layer in self.layers:
            pairs = layer.pairs()
            keys = torch.cat([pair.to_k_user(tokens[:, g:g + 1]) for g, pair in enumerate(pairs)], dim=1)
            values = sum(pair.to_v_user(tokens[:, g:g + 1]) for g, pair in enumerate(pairs))
            out.append((keys, values))
        return out


def adapter_config_for_model(arch_name: str, sites_to_modules: dict, embed_dim: int = REFERENCE_EMBED_DIM,
                             user_tokens: int = 1, user_groups: int = 1, user_attention: str = "") -> AdapterConfig:
    """An :class:`AdapterConfig` whose layer widths are read from a model's ``attn2`` modules."""
    dims = tuple(int(m.to_q.weight.shape[0]) for m in sites_to_modules.values())
    return AdapterConfig(arch=arch_name, layer_dims=dims, embed_dim=embed_dim, user_tokens=user_tokens,
                         user_groups=user_groups, user_attention=user_attention)
