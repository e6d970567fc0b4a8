"""PSA composes with ControlNet conditioning (a random ControlNet loaded by ComfyUI's own loader)."""
from __future__ import annotations

import copy

import pytest
import torch

from psa_model.adapter.modules import adapter_config_for_model
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import attach_adapter, attach_profile
from support.reference_psa import install_reference


@pytest.fixture(scope="module")
def controlnet(comfy_host):
    import comfy.controlnet
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    from devkit.fixtures import fill_parameters
    from devkit.unet_configs import SD15_TINY

    config = {k: v for k, v in copy.deepcopy(SD15_TINY).items()
              if k not in ("out_channels", "transformer_depth_output", "legacy")}
    model = ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config)
    fill_parameters(model, seed=5)
    return comfy.controlnet.load_controlnet_state_dict(model.state_dict())


def _sample(model, pos, neg):
    import comfy.sample

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    return comfy.sample.sample(model, noise, 2, 3.0, "euler", "normal", pos, neg, torch.zeros_like(noise),
                               disable_pbar=True, seed=0)


def test_psa_with_controlnet_matches_reference(sd15_checkpoint, controlnet):
    import nodes as comfy_nodes

    base = sd15_checkpoint[0]
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sd15", sites, embed_dim=32), seed=4, kv_std=0.05)
    profiles = random_embeddings(1, 32)
    gen = torch.Generator().manual_seed(8)
    pos = [[torch.randn(1, 77, 768, generator=gen), {}]]
    neg = [[torch.randn(1, 77, 768, generator=gen), {}]]
    hint = torch.rand(1, 64, 64, 3, generator=gen)
    pos_c, neg_c = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, controlnet, hint, 1.0, 0.0, 1.0)

    ours = attach_profile(attach_adapter(base, adapter), profiles)
    reference = install_reference(base, adapter.state_dict(), [s.key for s in sites], profiles, 1.0)
    with_control = _sample(ours, pos_c, neg_c)
    assert (with_control - _sample(reference, pos_c, neg_c)).abs().max().item() <= 1e-4 * with_control.abs().max().item()
    assert (with_control - _sample(ours, pos, neg)).abs().max().item() > 1e-2  # the ControlNet acts
