"""The user projection's standardised initialisation (``--standardize-projection``, docs/toy-world.md)."""
from __future__ import annotations

import torch

from psa_model.adapter.modules import UserProjection


def _correlated_embeddings(n: int = 32, dim: int = 64, spread: float = 0.05) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    common = torch.randn(dim, generator=gen) * 3.0
    return common + spread * torch.randn(n, dim, generator=gen)


def _mean_token_cosine(proj: UserProjection, emb: torch.Tensor) -> float:
    tokens = proj(emb)[:, 0]
    tokens = tokens / tokens.norm(dim=1, keepdim=True)
    cos = tokens @ tokens.T
    off = cos[~torch.eye(len(emb), dtype=torch.bool)]
    return float(off.abs().mean())


def test_standardised_projection_tells_correlated_users_apart():
    torch.manual_seed(0)
    emb = _correlated_embeddings()
    assert torch.corrcoef(emb).mean() > 0.98          # what the toy world's LLM gives
    proj = UserProjection(64, 768, 1)
    before = _mean_token_cosine(proj, emb)
    proj.standardize_on(emb)
    after = _mean_token_cosine(proj, emb)
    assert before > 0.9, before                        # every user gets nearly the same token
    assert after < 0.3, after
    with torch.no_grad():
        pre_norm = proj.proj(emb)
    assert pre_norm.mean(dim=0).abs().max() < 1e-3 * pre_norm.abs().mean()   # the shared part is gone


def test_standardised_projection_is_the_same_map_for_one_user_as_for_a_batch():
    emb = _correlated_embeddings()
    proj = UserProjection(64, 768, 1)
    proj.standardize_on(emb)
    # the bias cancels the shared part of W·e, so fp32 rounding differs by kernel at ~1e-4
    torch.testing.assert_close(proj(emb[3:4]), proj(emb)[3:4], atol=2e-3, rtol=0)
