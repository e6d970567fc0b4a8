"""Behaviour of the PSA patch on ComfyUI models: identity at scale 0, no mutation, per-sample
profiles, fail-closed errors, composability with LoRA and other attention patches, dtype."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from psa_model.adapter.modules import AdapterConfig, adapter_config_for_model
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import PSAError, attach_adapter, attach_profile, installed_adapter
from support.reference_psa import install_reference

E = 64


@pytest.fixture(scope="module")
def sd15(sd15_checkpoint):
    base = sd15_checkpoint[0]
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sd15", sites, embed_dim=E), seed=1, kv_std=0.05)
    return base, adapter, [s.key for s in sites]


def _conds(seed=7):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 768, generator=gen), {}]], [[torch.randn(1, 77, 768, generator=gen), {}]]


def _sample(model, noise, cfg=3.0, steps=2):
    import comfy.sample

    pos, neg = _conds()
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", pos, neg, torch.zeros_like(noise),
                               disable_pbar=True, seed=0)


def _noise(batch=1, seed=11):
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_scale_zero_is_bit_identical_to_the_base(sd15):
    base, adapter, _ = sd15
    personal = attach_profile(attach_adapter(base, adapter), random_embeddings(1, E), scale=0.0)
    assert torch.equal(_sample(personal, _noise()), _sample(base, _noise()))


def test_the_input_model_is_never_mutated(sd15):
    base, adapter, _ = sd15
    before = repr(base.model_options)
    reference = _sample(base, _noise())
    patched = attach_adapter(base, adapter)
    personal = attach_profile(patched, random_embeddings(1, E))
    _sample(personal, _noise())
    assert repr(base.model_options) == before and installed_adapter(base.model_options) is None
    assert "psa_user" not in repr(patched.model_options)  # the profile went to a clone of the patched model
    assert torch.equal(_sample(base, _noise()), reference)


def test_per_sample_profiles_match_single_runs(sd15):
    base, adapter, _ = sd15
    profiles = random_embeddings(3, E, seed=4)
    patched = attach_adapter(base, adapter)
    noise = _noise(3)
    batched = _sample(attach_profile(patched, profiles), noise)
    singles = [_sample(attach_profile(patched, profiles[i:i + 1]), noise[i:i + 1]) for i in range(3)]
    assert (batched - torch.cat(singles)).abs().max().item() <= 1e-4
    assert (singles[0] - singles[1]).abs().max().item() > 1e-2  # the profiles really differ


def test_profile_count_must_match_the_batch(sd15):
    base, adapter, _ = sd15
    personal = attach_profile(attach_adapter(base, adapter), random_embeddings(2, E))
    with pytest.raises(PSAError, match="2 profiles were given for a latent batch of 3"):
        _sample(personal, _noise(3))


def test_fail_closed_errors(sd15, sdxl_unet):
    base, adapter, _ = sd15
    sdxl_sites = match_sites(architecture("sdxl"), sdxl_unet.get_model_object("diffusion_model"))
    sdxl_adapter = random_adapter(adapter_config_for_model("sdxl", sdxl_sites, embed_dim=E))
    with pytest.raises(ValueError, match=r"sdxl PSA adapter \(70 layers\) does not fit this UNet \(16"):
        attach_adapter(base, sdxl_adapter)
    wide = random_adapter(AdapterConfig("sd15", tuple([640] * 16), embed_dim=E))
    with pytest.raises(ValueError, match="width 640 but the model's cross-attention there has width 320"):
        attach_adapter(base, wide)
    patched = attach_adapter(base, adapter)
    with pytest.raises(ValueError, match=f"expects \\[profiles, {E}\\]"):
        attach_profile(patched, random_embeddings(1, 3584))
    with pytest.raises(PSAError, match="no profile"):
        _sample(patched, _noise())
    with pytest.raises(PSAError, match="already has a PSA adapter"):
        attach_adapter(patched, adapter)


def test_stacks_with_a_lora_on_the_attention_output(sd15):
    """LoRA (ComfyUI weight patches) on every attn2.to_out: PSA must see the patched weights."""
    base, adapter, sites = sd15
    lora = base.clone()
    patches = {}
    for key in base.model.state_dict():
        if key.endswith("attn2.to_out.0.weight"):
            w = base.model.state_dict()[key]
            patches[key] = ("diff", (0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(2)),))
    assert len(lora.add_patches(patches, 1.0)) == 16
    profiles = random_embeddings(1, E)
    ours = _sample(attach_profile(attach_adapter(lora, adapter), profiles), _noise())
    reference = _sample(install_reference(lora, adapter.state_dict(), sites, profiles, 1.0), _noise())
    without_lora = _sample(attach_profile(attach_adapter(base, adapter), profiles), _noise())
    assert (ours - reference).abs().max().item() <= 1e-3 * reference.abs().max().item()
    assert (ours - without_lora).abs().max().item() > 1e-2


def test_composes_with_another_packs_attn2_replace(sd15):
    """Another pack replacing attn2 on the same blocks: PSA's output patch still runs on top."""
    import comfy.ldm.modules.attention as attention

    base, adapter, sites = sd15
    hits = []

    def other_pack(q, k, v, extra_options):
        hits.append(1)
        return attention.optimized_attention(q, k, v, extra_options["n_heads"])

    other = base.clone()
    for block_name, block_id, block_index in sites:
        other.set_model_attn2_replace(other_pack, block_name, block_id, block_index)
    profiles = random_embeddings(1, E)
    patched = attach_adapter(other, adapter)
    before = installed_adapter(patched.model_options).calls
    both = _sample(attach_profile(patched, profiles), _noise())
    psa_only = _sample(attach_profile(attach_adapter(base, adapter), profiles), _noise())
    assert hits and installed_adapter(patched.model_options).calls > before
    assert (both - psa_only).abs().max().item() <= 1e-4 * psa_only.abs().max().item()


def test_user_tensors_follow_activation_dtype_and_are_freed(sd15):
    base, adapter, _ = sd15
    personal = attach_profile(attach_adapter(base, adapter), random_embeddings(1, E))
    user = personal.model_options["transformer_options"]["psa_user"]
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        k, v = user.rows(0, [0, 1], 4, torch.device("cpu"), dtype)  # as the patch asks for each call
        assert k.dtype == v.dtype == dtype and v.shape == (4, 1, 320)
        assert torch.equal(v[0], v[1]) and not torch.equal(v[0], v[2])  # cond rows vs null-profile rows
    user_ref = weakref.ref(user)
    del personal, user
    gc.collect()
    assert user_ref() is None


def _unet_eps(model_patcher, x, sigma, context):
    """One conditional UNet call with the patcher's transformer options (no model loading)."""
    options = dict(model_patcher.model_options["transformer_options"], cond_or_uncond=[0], sigmas=sigma)
    with torch.no_grad():
        return model_patcher.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


def test_low_vram_on_the_fly_lora_is_seen_by_psa(sd15):
    """In low-VRAM mode ComfyUI patches LoRA into weights inside each module's forward; PSA calls
    the modules, so it matches the normally loaded (weights patched in place) result."""
    base, adapter, _ = sd15
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.weight"
    weight = base.model.state_dict()[key]
    lora = base.clone()
    lora.add_patches({key: ("diff", (0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)),))}, 1.0)
    personal = attach_profile(attach_adapter(lora, adapter), random_embeddings(1, E))
    x, sigma = _noise(), torch.tensor([2.0])
    context = _conds()[0][0][0]
    to_out = base.get_model_object("diffusion_model").input_blocks[1][1].transformer_blocks[0].attn2.to_out[0]
    try:
        personal.patch_model(lowvram_model_memory=1)  # every module left to on-the-fly casting/patching
        assert to_out.comfy_cast_weights and to_out.weight_function  # the LoRA lives only in the forward
        assert torch.equal(to_out.weight, weight)  # so reading .weight directly would miss it
        low_vram = _unet_eps(personal, x, sigma, context)
    finally:
        personal.unpatch_model()
    try:
        personal.patch_model()  # normal mode: LoRA merged into the weights in place
        assert not torch.equal(to_out.weight, weight)
        normal = _unet_eps(personal, x, sigma, context)
    finally:
        personal.unpatch_model()
    assert torch.equal(to_out.weight, weight)
    assert (low_vram - normal).abs().max().item() <= 1e-5
