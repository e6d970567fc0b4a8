"""The reference samplers in ComfyUI's SamplerCustom, behind PSA Apply Profile, on the tiny SD1.5
fixture: PSA PLMS Sampler + Schedule replay PNDM (skip_prk_steps) step by step
(``tests/support/pndm_reference.py``, DDPM alpha-space); PSA Euler Sampler on ComfyUI's
``ddim_uniform`` replays diffusers' Euler discrete (``tests/support/euler_discrete_reference.py``)."""
from __future__ import annotations

import pytest
import torch

import devkit.pack_loader
from devkit.pack_loader import load_pack
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.modules import adapter_config_for_model
from psa_model.adapter.patch import attach_adapter
from psa_model.profiles.profile import ProfileLabel, PSAProfile
from support.euler_discrete_reference import euler_discrete_leading
from support.pndm_reference import pndm_skip_prk


@pytest.fixture(scope="module")
def pack(comfy_host):
    load_pack()
    return devkit.pack_loader


@pytest.fixture(scope="module")
def personal_model(pack, sd15_checkpoint):
    base = sd15_checkpoint[0]
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sd15", sites, embed_dim=32), seed=2, kv_std=0.05)
    profile = PSAProfile(random_embeddings(1, 32), (ProfileLabel("test"),))
    return pack.node_class("PSAApplyProfile").execute(attach_adapter(base, adapter), profile, 1.0)[0]


def _recorder(calls: list):
    """A UNet wrapper that records (σ-space input, σ, denoised) of the prompt's half of each call."""
    def record(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        k = args["cond_or_uncond"].index(0)  # the prompt's half of the batch (cfg 1 makes it the result)
        x, sigma, x0 = (v.chunk(len(args["cond_or_uncond"]))[k].double() for v in (args["input"], args["timestep"], out))
        calls.append((x, sigma.item(), x0))
        return out
    return record


def _prompt_pair_and_empty_latent(seed: int) -> tuple[list, list, dict]:
    gen = torch.Generator().manual_seed(seed)
    cond = [[torch.randn(1, 77, 768, generator=gen), {}]]
    uncond = [[torch.randn(1, 77, 768, generator=gen), {}]]
    return cond, uncond, {"samples": torch.zeros(1, 4, 8, 8)}


@pytest.mark.parametrize("steps, scaling", [(3, "comfyui"), (3, "diffusers")])
def test_samplercustom_with_plms_nodes_replays_pndm(pack, personal_model, steps, scaling):
    import comfy.sample
    from comfy_extras.nodes_custom_sampler import SamplerCustom

    calls = []

    model = personal_model.clone()
    model.set_model_unet_function_wrapper(_recorder(calls))
    sampling = model.get_model_object("model_sampling")
    sigmas = pack.node_class("PSAPLMSSchedule").execute(model, steps)[0]
    sampler = pack.node_class("PSAPLMSSampler").execute(scaling)[0]
    cond, uncond, latent = _prompt_pair_and_empty_latent(seed=1)
    out = SamplerCustom.execute(model, True, 5, 1.0, cond, uncond, sampler, sigmas, latent)

    timesteps = [round(float(sampling.timestep(torch.tensor(s)))) for _, s, _ in calls]
    table = sampling.sigmas.double()
    alphas_cumprod = 1 / (1 + table ** 2)
    replay = iter(calls)

    def eps(x_ddpm, t):  # the recorded UNet call, checked to be the one PNDM makes next
        x, sigma, x0 = next(replay)
        assert sigma == pytest.approx(table[t].item(), rel=1e-6)
        torch.testing.assert_close(x_ddpm, x / (1 + sigma ** 2) ** 0.5, rtol=1e-4, atol=1e-4)
        return (x - x0) / sigma

    start = calls[0][0] / (1 + calls[0][1] ** 2) ** 0.5
    noise = comfy.sample.prepare_noise(latent["samples"], 5).double()
    if scaling == "diffusers":  # diffusers' x_T is the unit noise itself
        torch.testing.assert_close(start, noise, rtol=1e-5, atol=1e-5)
    else:  # ComfyUI starts from σ0·noise below the model's largest σ
        torch.testing.assert_close(calls[0][0], noise * calls[0][1], rtol=1e-5, atol=1e-5)
    expected, step_timesteps, run = pndm_skip_prk(start, steps, alphas_cumprod, eps)
    assert timesteps == run == [667, 334, 334, 1]
    final = model.model.process_latent_in(out[0]["samples"]).double()
    if scaling == "comfyui":  # σ-space result; diffusers' latent is the same divided by √(σ_end² + 1)
        final = final / (1 + table[0] ** 2) ** 0.5
    torch.testing.assert_close(final, expected, rtol=1e-4, atol=1e-4)
    assert sigmas[-1].item() == pytest.approx(table[0].item())


@pytest.mark.parametrize("scaling", ["comfyui", "diffusers"])
def test_samplercustom_with_euler_node_on_ddim_uniform_replays_euler_discrete(pack, personal_model, scaling):
    import comfy.sample
    from comfy_extras.nodes_custom_sampler import BasicScheduler, SamplerCustom

    steps, calls = 4, []
    model = personal_model.clone()
    model.set_model_unet_function_wrapper(_recorder(calls))
    sampling = model.get_model_object("model_sampling")
    sigmas = BasicScheduler.execute(model, "ddim_uniform", steps, 1.0)[0]
    sampler = pack.node_class("PSAEulerSampler").execute(scaling)[0]
    cond, uncond, latent = _prompt_pair_and_empty_latent(seed=3)
    out = SamplerCustom.execute(model, True, 9, 1.0, cond, uncond, sampler, sigmas, latent)

    table = sampling.sigmas.double()
    replay = iter(calls)

    def eps(model_input, t):  # the recorded UNet call, checked to be the one the scheduler makes next
        x, sigma, x0 = next(replay)
        assert sigma == pytest.approx(table[t].item(), rel=1e-6)
        torch.testing.assert_close(model_input, x / (1 + sigma ** 2) ** 0.5, rtol=1e-4, atol=1e-4)
        return (x - x0) / sigma

    noise = comfy.sample.prepare_noise(latent["samples"], 9).double()
    sigma0 = calls[0][1]
    if scaling == "diffusers":  # diffusers' first model input is the unit noise itself
        torch.testing.assert_close(calls[0][0] / (1 + sigma0 ** 2) ** 0.5, noise, rtol=1e-5, atol=1e-5)
        start = noise
    else:  # ComfyUI starts from σ0·noise
        torch.testing.assert_close(calls[0][0], noise * sigma0, rtol=1e-5, atol=1e-5)
        start = noise * sigma0 / (1 + sigma0 ** 2) ** 0.5
    expected, timesteps = euler_discrete_leading(start, steps, 1 / (1 + table ** 2), eps)
    assert timesteps == [751, 501, 251, 1] and len(calls) == steps
    torch.testing.assert_close(model.model.process_latent_in(out[0]["samples"]).double(), expected,
                               rtol=1e-4, atol=1e-4)


def test_schedule_refuses_a_model_without_a_noise_table(pack):
    class NoTable:
        def get_model_object(self, name):
            return object()

    with pytest.raises(ValueError, match="no per-timestep noise table"):
        pack.node_class("PSAPLMSSchedule").execute(NoTable(), 10)


@pytest.mark.parametrize("node", ["PSAPLMSSampler", "PSAEulerSampler"])
def test_diffusers_scaling_refuses_a_latent_that_is_not_empty(pack, personal_model, node):
    from comfy_extras.nodes_custom_sampler import SamplerCustom

    sigmas = pack.node_class("PSAPLMSSchedule").execute(personal_model, 2)[0]
    sampler = pack.node_class(node).execute("diffusers")[0]
    cond = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(ValueError, match="empty latent"):
        SamplerCustom.execute(personal_model, True, 5, 1.0, cond, cond, sampler, sigmas,
                              {"samples": torch.ones(1, 4, 8, 8)})
