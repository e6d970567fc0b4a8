"""The user projection's standardised initialisation (``--standardize-projection``, docs/toy-world.md)."""
from __future__ import annotations

import pytest
import torch

from psa_model.adapter.modules import UserProjection


def _correlated_embeddings(n: int = 32, dim: int = 64, spread: float = 0.05) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    common = torch.randn(dim, generator=gen) * 3.0
    return common + spread * torch.randn(n, dim, generator=gen)


def _mean_token_cosine(proj: UserProjection, emb: torch.Tensor) -> float:
    with torch.no_grad():
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


def _pre_norm_shift(proj: UserProjection, base: torch.Tensor, direction: torch.Tensor) -> float:
    with torch.no_grad():
        return float((proj.proj(base + direction) - proj.proj(base)).norm())


def test_ridge_caps_how_much_a_direction_the_training_users_share_is_amplified():
    # Training users that never differ along the last coordinate: whitening alone would divide
    # by ~0 there, so a new user who differs only in it would get an arbitrary token.
    emb = _correlated_embeddings(n=256)   # enough users for a full-rank spread in the other 63
    emb[:, -1] = emb[0, -1]
    spread = torch.zeros(64)
    spread[0] = 1.0
    flat = torch.zeros(64)
    flat[-1] = 1.0
    shifts = {}
    for ridge in (1e-4, 1e-1):
        torch.manual_seed(0)
        proj = UserProjection(64, 768, 1)
        proj.standardize_on(emb, ridge=ridge)
        unit = _pre_norm_shift(proj, emb[0], spread * 0.05)   # a step as large as the users' spread
        shifts[ridge] = _pre_norm_shift(proj, emb[0], flat * 0.05) / unit
    # the ridge is relative to the mean eigenvalue: 1e-4 amplifies the unseen direction ~100×
    # against one the users do vary in, 0.1 by at most 1/sqrt(0.1) ≈ 3.2×
    assert shifts[1e-4] > 30, shifts
    assert shifts[1e-1] < 3.5, shifts


def test_standardize_ridge_must_be_positive(tmp_path):
    from training.config import TrainConfig

    (tmp_path / "ckpt.safetensors").write_bytes(b"")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metadata.jsonl").write_text("")
    (tmp_path / "emb").mkdir()
    cfg = TrainConfig(checkpoint=str(tmp_path / "ckpt.safetensors"), train_data=str(tmp_path / "train"),
                      embeddings=str(tmp_path / "emb"), output_dir=str(tmp_path / "out"))
    cfg.validate()
    cfg.standardize_ridge = 0.0
    with pytest.raises(ValueError, match="standardize_ridge 0.0: use a ridge > 0"):
        cfg.validate()


def test_the_ridge_is_part_of_the_run_fingerprint_only_when_it_is_used():
    from training.config import TrainConfig

    plain = TrainConfig(checkpoint="c", train_data="t", embeddings="e", output_dir="o")
    assert TrainConfig(**{**plain.__dict__, "standardize_ridge": 0.5}).run_fingerprint() == plain.run_fingerprint()
    used = TrainConfig(**{**plain.__dict__, "standardize_projection": True})
    assert TrainConfig(**{**used.__dict__, "standardize_ridge": 0.5}).run_fingerprint() != used.run_fingerprint()
    assert used.run_fingerprint() != plain.run_fingerprint()
