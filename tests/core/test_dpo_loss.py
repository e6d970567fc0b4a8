"""The Diffusion-DPO loss against a hand computation (reference note §4). No ComfyUI import."""
from __future__ import annotations

import math

import pytest
import torch

from training.loss import DEFAULT_BETA, dpo_loss, dpo_loss_from_predictions, per_sample_mse


def test_default_beta_is_reference_value():
    assert DEFAULT_BETA == 5000.0


def test_loss_matches_hand_computation():
    # two pairs, numbers chosen by hand
    m_c, m_r = torch.tensor([0.10, 0.30]), torch.tensor([0.12, 0.25])
    r_c, r_r = torch.tensor([0.11, 0.28]), torch.tensor([0.11, 0.28])
    beta = 10.0
    res = dpo_loss(m_c, m_r, r_c, r_r, beta)
    # pair 0: model_diff −0.02, ref_diff 0 → inside = −0.5·10·(−0.02) = 0.1
    # pair 1: model_diff 0.05, ref_diff 0 → inside = −0.25
    inside = [0.1, -0.25]
    expected = sum(-math.log(1 / (1 + math.exp(-v))) for v in inside) / 2
    assert res.inside.tolist() == pytest.approx(inside, abs=1e-6)
    assert res.loss.item() == pytest.approx(expected, rel=1e-6)
    assert res.accuracy.item() == pytest.approx(0.5)


def test_predictions_layout_and_per_sample_mse():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(4, 4, 2, 2, generator=g)  # rows: chosen0, chosen1, rejected0, rejected1
    model = target + 0.1 * torch.randn(4, 4, 2, 2, generator=g)
    ref = target + 0.1 * torch.randn(4, 4, 2, 2, generator=g)
    mse_m = [((model[i] - target[i]) ** 2).mean().item() for i in range(4)]
    mse_r = [((ref[i] - target[i]) ** 2).mean().item() for i in range(4)]
    assert per_sample_mse(model, target).tolist() == pytest.approx(mse_m, rel=1e-5)
    res = dpo_loss_from_predictions(model, ref, target, beta=5000.0)
    for i in range(2):
        inside = -0.5 * 5000.0 * ((mse_m[i] - mse_m[i + 2]) - (mse_r[i] - mse_r[i + 2]))
        assert res.inside[i].item() == pytest.approx(inside, rel=1e-4, abs=1e-4)


def test_gradient_flows_only_through_model_terms():
    m_c = torch.tensor([0.2], requires_grad=True)
    m_r = torch.tensor([0.3], requires_grad=True)
    r_c = torch.tensor([0.25], requires_grad=True)
    r_r = torch.tensor([0.25], requires_grad=True)
    dpo_loss(m_c, m_r, r_c, r_r, beta=2.0).loss.backward()
    assert r_c.grad is None and r_r.grad is None
    # d/dm_c of −logσ(−0.5β(m_c−m_r)) = 0.5β·σ(−inside)
    inside = -0.5 * 2.0 * (0.2 - 0.3)
    assert m_c.grad.item() == pytest.approx(0.5 * 2.0 / (1 + math.exp(inside)), rel=1e-5)
    assert m_r.grad.item() == pytest.approx(-m_c.grad.item(), rel=1e-6)


def test_identical_model_and_reference_give_log2_and_zero_accuracy():
    x = torch.rand(3)
    res = dpo_loss(x, x.flip(0), x, x.flip(0))
    assert res.loss.item() == pytest.approx(math.log(2), rel=1e-6)
    assert res.accuracy.item() == 0.0
