"""Diffusion-DPO loss as pure functions (Diffusion-DPO objective; ``docs/reference-parity.md``, "Loss").

No ComfyUI import: this module is tested in the ``core`` tier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_BETA = 5000.0  # the reference's β (docs/reference-parity.md)


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``mse(x) = mean over C,H,W of (ε_pred − ε)²`` → one value per sample, [B], computed and
    returned in ``dtype`` (bf16 reproduces the reference's bf16 reference branch,
    ``docs/reference-parity.md``, "Precision of the reference branch")."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred.to(dtype) - target.to(dtype)).pow(2).reshape(pred.shape[0], -1).mean(dim=1)


@dataclass
class DPOResult:
    """Loss (scalar, differentiable), ``inside`` per pair [B], implicit accuracy (float tensor) and
    the four per-branch errors per pair [B] (policy/reference × chosen/rejected, no gradient)."""

    loss: torch.Tensor
    inside: torch.Tensor
    accuracy: torch.Tensor
    model_diff: torch.Tensor
    ref_diff: torch.Tensor
    model_mse_chosen: torch.Tensor | None = None
    model_mse_rejected: torch.Tensor | None = None
    ref_mse_chosen: torch.Tensor | None = None
    ref_mse_rejected: torch.Tensor | None = None

    def branch_means(self) -> dict[str, float]:
        """Mean per-branch MSE as floats, keyed as in the training log (``policy_mse_chosen`` …)."""
        return {"policy_mse_chosen": self.model_mse_chosen.mean().item(),
                "policy_mse_rejected": self.model_mse_rejected.mean().item(),
                "ref_mse_chosen": self.ref_mse_chosen.mean().item(),
                "ref_mse_rejected": self.ref_mse_rejected.mean().item()}


def dpo_loss(model_mse_chosen: torch.Tensor, model_mse_rejected: torch.Tensor,
             ref_mse_chosen: torch.Tensor, ref_mse_rejected: torch.Tensor,
             beta: float = DEFAULT_BETA) -> DPOResult:
    """Diffusion-DPO (Wallace et al.'s objective with the reference's constants; ``docs/reference-parity.md``).

    ``model_diff = mse_θ(chosen) − mse_θ(rejected)``; ``ref_diff`` likewise for the frozen
    reference; ``inside = −0.5·β·(model_diff − ref_diff)``; ``loss = mean(−log σ(inside))``;
    implicit accuracy = mean(inside > 0). The reference terms carry no gradient; ``ref_diff`` is
    taken in the reference errors' own dtype (bf16 ones give a bf16 difference, as in the
    reference), ``inside`` in float32.
    """
    model_diff = model_mse_chosen - model_mse_rejected
    ref_diff = (ref_mse_chosen - ref_mse_rejected).detach()
    inside = -0.5 * beta * (model_diff.float() - ref_diff.float())
    loss = -F.logsigmoid(inside).mean()
    accuracy = (inside > 0).float().mean()
    return DPOResult(loss, inside.detach(), accuracy.detach(), model_diff.detach(), ref_diff,
                     model_mse_chosen.detach(), model_mse_rejected.detach(), ref_mse_chosen.detach(),
                     ref_mse_rejected.detach())


def dpo_loss_from_predictions(model_pred: torch.Tensor, ref_pred: torch.Tensor, target: torch.Tensor,
                              beta: float = DEFAULT_BETA, ref_dtype: torch.dtype = torch.float32) -> DPOResult:
    """Predictions for a batch laid out ``[chosen (B); rejected (B)]`` (2B rows), shared target;
    the reference errors are computed in ``ref_dtype``."""
    if model_pred.shape[0] % 2:
        raise ValueError("predictions must hold chosen rows then rejected rows (an even count)")
    m = per_sample_mse(model_pred, target)
    r = per_sample_mse(ref_pred, target, ref_dtype)
    m_c, m_r = m.chunk(2)
    r_c, r_r = r.chunk(2)
    return dpo_loss(m_c, m_r, r_c, r_r, beta)
