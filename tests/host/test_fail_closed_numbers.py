"""Fail-closed on numbers (docs/security.md): a non-finite or overflowing value anywhere on the PSA path
stops the run with an error naming the profile or adapter; no NaN image comes out."""
from __future__ import annotations

import pytest
import torch

from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.modules import adapter_config_for_model
from psa_model.adapter.patch import PSAError, attach_adapter, attach_profile, check_denoised_finite
from psa_model.formats.adapter_file import AdapterFormatError, load_adapter, save_native

E = 32


@pytest.fixture(scope="module")
def sd15(sd15_checkpoint):
    base = sd15_checkpoint[0]
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    return base, random_adapter(adapter_config_for_model("sd15", sites, embed_dim=E), seed=3, kv_std=0.05)


def _sample(model, cfg=3.0):
    import comfy.sample

    gen = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 77, 768, generator=gen), {}]]
    neg = [[torch.randn(1, 77, 768, generator=gen), {}]]
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    return comfy.sample.sample(model, noise, 2, cfg, "euler", "normal", pos, neg, torch.zeros_like(noise),
                               disable_pbar=True, seed=0)


def test_a_huge_finite_embedding_is_refused_naming_the_profile(sd15):
    base, adapter = sd15
    huge = torch.full((1, E), 3e38)  # finite in float32; the projection overflows to Inf, LayerNorm to NaN
    assert torch.isfinite(huge).all()
    with pytest.raises(PSAError, match="profile 'huge user'.*NaN or Inf"):
        attach_profile(attach_adapter(base, adapter), huge, source="profile 'huge user'")


def test_a_non_finite_embedding_is_refused(sd15):
    base, adapter = sd15
    bad = random_embeddings(1, E)
    bad[0, 3] = float("nan")
    with pytest.raises(PSAError, match="embedding of profile x contains NaN"):
        attach_profile(attach_adapter(base, adapter), bad, source="profile x")


def test_an_adapter_file_with_inf_weights_is_refused_on_load(sd15, tmp_path):
    _, adapter = sd15
    tensors = {k: v.clone() for k, v in adapter.state_dict().items()}
    tensors["layers.2.to_v_user.weight"][0, 0] = float("inf")
    path = tmp_path / "broken.safetensors"
    save_native(tensors, path, meta={"arch": "sd15"})
    with pytest.raises(AdapterFormatError, match=r"broken\.safetensors.*layers\.2\.to_v_user\.weight.*NaN or Inf"):
        load_adapter(path)


def test_values_that_overflow_half_precision_are_refused(sd15):
    base, adapter = sd15
    loud = random_adapter(adapter.config, seed=3, kv_std=0.05)
    with torch.no_grad():
        for layer in loud.layers:  # finite in float32; |V| ~ 1e6 · |tokens| overflows float16 (max 65504)
            layer.to_v_user.weight.normal_(0.0, 1e6, generator=torch.Generator().manual_seed(0))
    user = attach_profile(attach_adapter(base, loud), random_embeddings(1, E), source="profile loud")
    conditioning = user.model_options["transformer_options"]["psa_user"]
    with pytest.raises(PSAError, match="layer 0 user values for profile loud in torch.float16"):
        conditioning.rows(0, [0], 1, torch.device("cpu"), torch.float16)


def test_a_nan_denoised_step_stops_sampling(sd15):
    base, adapter = sd15
    personal = attach_profile(attach_adapter(base, adapter), random_embeddings(1, E), source="profile y")
    assert check_denoised_finite in personal.model_options["sampler_post_cfg_function"]
    assert torch.isfinite(_sample(personal)).all()  # the check passes a normal run through unchanged
    args = {"denoised": torch.tensor([[1.0, float("nan")]]), "model_options": personal.model_options}
    with pytest.raises(PSAError, match="NaN/Inf while PSA was applied for profile y"):
        check_denoised_finite(args)


def test_a_non_finite_scale_is_refused(sd15):
    base, adapter = sd15
    with pytest.raises(PSAError, match="psa_scale inf is not a finite number"):
        attach_profile(attach_adapter(base, adapter), random_embeddings(1, E), scale=float("inf"))
