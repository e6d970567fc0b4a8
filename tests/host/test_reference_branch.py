"""The DPO reference branch computed as the reference computes it (docs/reference-parity.md,
"Precision of the reference branch"), on the tiny SD1.5 fixture with a zero adapter.

The expected logits are computed here from the reference's recipe, not by the trainer: the
reference is a bf16 copy of the UNet fed bf16 inputs; its per-sample errors and their
chosen − rejected difference are bf16 numbers; ``inside = −β/2 · (Δθ − Δref)``. The policy runs
in fp32 here (the reference's bf16 autocast is ``--precision bf16``, a separate option, and slow
on a CPU).
"""
from __future__ import annotations

import copy

import torch

from support.training_helpers import small_config, trainer_for


def _reference_logits(base, inputs: dict, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    unet = base.model.model.diffusion_model
    sampling = base.model.get_model_object("model_sampling")
    sigma, target = inputs["sigma"], inputs["noise"]
    x_in = inputs["x_noisy"] / (sigma ** 2 + 1.0).sqrt().reshape(-1, 1, 1, 1)
    t = sampling.timestep(sigma).float()
    context = inputs["conds"]["c_crossattn"]
    with torch.no_grad():
        policy = unet(x_in, t, context=context, transformer_options={})
        ref_unet = copy.deepcopy(unet).to(torch.bfloat16)
        ref_unet.dtype = torch.bfloat16
        ref = ref_unet(x_in.bfloat16(), t, context=context.bfloat16(), transformer_options={})
    policy_err = (policy - target).pow(2).mean(dim=[1, 2, 3])
    ref_err = (ref - target.bfloat16()).pow(2).mean(dim=[1, 2, 3])
    assert ref_err.dtype == torch.bfloat16
    policy_c, policy_r = policy_err.chunk(2)
    ref_c, ref_r = ref_err.chunk(2)
    ref_diff = ref_c - ref_r
    assert ref_diff.dtype == torch.bfloat16
    return -0.5 * beta * ((policy_c - policy_r) - ref_diff.float()), ref_diff


def test_bf16_reference_branch_gives_the_reference_logits_at_a_zero_adapter(base, data, fixture_paths, tmp_path):
    """With one path for both branches the logit at a zero adapter is zero (the policy and the
    reference compute the same thing); with ``--ref-precision bf16`` it is the reference's."""
    cfg = small_config(data, tmp_path, fixture_paths["sd15_tiny.safetensors"], ref_precision="bf16", batch_size=4)
    tr = trainer_for(cfg, base)
    inputs = tr.batch_inputs(tr.train_set, tr.train_set.pairs[:4], torch.Generator().manual_seed(5), augment=False)
    assert torch.equal(inputs["noise"], inputs["noise"].bfloat16().float())  # the reference's noise is bf16
    res = tr.dpo_result(inputs, grad=False)
    assert res.ref_mse_chosen.dtype == torch.bfloat16
    expected, ref_diff = _reference_logits(base, inputs, cfg.beta)
    assert torch.equal(res.ref_diff, ref_diff)  # the same bf16 numbers
    # one path for both branches gives exactly 0 here; the reference's bf16 branch does not
    assert expected.abs().max() > 0.02, expected
    torch.testing.assert_close(res.inside, expected, rtol=0, atol=2e-3)
