"""Deterministic demo adapters and profiles (random weights: smoke models, not safety models)."""
from __future__ import annotations

import torch

from psa_model.adapter.modules import AdapterConfig, PSAAdapter


def random_adapter(config: AdapterConfig, seed: int = 0, kv_std: float = 0.05) -> PSAAdapter:
    """An adapter with seeded random weights everywhere (the trained zero-init would be a no-op)."""
    gen = torch.Generator().manual_seed(seed)
    adapter = PSAAdapter(config)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if name.startswith("user_proj.norm"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=gen))
            elif name.startswith("user_proj.proj"):
                p.copy_(torch.randn(p.shape, generator=gen) / (config.embed_dim ** 0.5))
            else:
                p.copy_(kv_std * torch.randn(p.shape, generator=gen))
    return adapter.eval().requires_grad_(False)


def random_embeddings(count: int, dim: int, seed: int = 0, std: float = 2.3) -> torch.Tensor:
    """User embeddings with the published ones' spread (std ≈ 2.3, docs/reference-parity.md)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, dim, generator=gen) * std
