"""The node classes, called as ComfyUI calls them, on the SD1.5 fixture."""
from __future__ import annotations

import pytest
import torch

from psa_model.adapter.modules import adapter_config_for_model
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import PSAError, attach_adapter
from psa_model.profiles.profile import ProfileLabel, PSAProfile
import devkit.pack_loader
from devkit.pack_loader import load_pack


@pytest.fixture(scope="module")
def pack(comfy_host):
    load_pack()
    return devkit.pack_loader


@pytest.fixture(scope="module")
def setup(sd15_checkpoint):
    base = sd15_checkpoint[0]
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sd15", sites, embed_dim=32), seed=2, kv_std=0.05)
    gen = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 768, generator=gen), {}]]
    uncond = [[torch.randn(1, 77, 768, generator=gen), {}]]
    profile = PSAProfile(random_embeddings(1, 32), (ProfileLabel("test"),))
    return base, attach_adapter(base, adapter), cond, uncond, profile


def _kwargs(setup, **extra):
    _, patched, cond, uncond, profile = setup
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    args = dict(model=patched, profile=profile, psa_scale=1.0, seed=5, steps=2, cfg=4.0, sampler_name="euler",
                scheduler="normal", positive=cond, negative=uncond, latent_image=latent, denoise=1.0)
    args.update(extra)
    return args


def test_psa_sampler_at_scale_zero_equals_stock_ksampler(pack, setup):
    import nodes as comfy_nodes

    psa = pack.node_class("PSAKSampler").execute(**_kwargs(setup, psa_scale=0.0))[0]["samples"]
    args = _kwargs(setup)
    stock = comfy_nodes.KSampler().sample(setup[0], args["seed"], args["steps"], args["cfg"], "euler", "normal",
                                          args["positive"], args["negative"], args["latent_image"])[0]["samples"]
    assert torch.equal(psa, stock)
    personal = pack.node_class("PSAKSampler").execute(**_kwargs(setup))[0]["samples"]
    assert not torch.equal(personal, stock)


def test_apply_profile_node_then_stock_sampler_equals_psa_sampler(pack, setup):
    import nodes as comfy_nodes

    args = _kwargs(setup)
    model = pack.node_class("PSAApplyProfile").execute(args["model"], args["profile"], 1.0)[0]
    stock = comfy_nodes.KSampler().sample(model, args["seed"], args["steps"], args["cfg"], "euler", "normal",
                                          args["positive"], args["negative"], args["latent_image"])[0]["samples"]
    psa = pack.node_class("PSAKSampler").execute(**args)[0]["samples"]
    assert torch.equal(stock, psa)


def test_sampler_refuses_when_psa_never_ran(pack, setup):
    # One step at the highest sigma, PSA window restricted to the last half: no step applies it.
    with pytest.raises(PSAError, match="never ran"):
        pack.node_class("PSAKSampler").execute(**_kwargs(setup, steps=1, start_percent=0.5, end_percent=1.0))


def test_sampler_needs_a_psa_model(pack, setup):
    with pytest.raises(PSAError, match="no PSA adapter"):
        pack.node_class("PSAKSampler").execute(**_kwargs(setup, model=setup[0]))


def test_start_end_percent_window_changes_the_result(pack, setup):
    sampler = pack.node_class("PSAKSampler")
    full = sampler.execute(**_kwargs(setup, steps=4))[0]["samples"]
    late = sampler.execute(**_kwargs(setup, steps=4, start_percent=0.5))[0]["samples"]
    assert not torch.equal(full, late)


def test_pack_registers_through_the_versioned_node_schema(pack):
    import asyncio

    from comfy_api.latest import ComfyExtension, io

    module = load_pack()
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # ComfyUI's loader would prefer the V1 path
    extension = asyncio.run(module.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    classes = asyncio.run(extension.get_node_list())
    assert all(issubclass(cls, io.ComfyNode) for cls in classes)
    assert {"PSAModelPatcher", "PSAKSampler", "PSAProfilePolicy"} <= {cls.GET_SCHEMA().node_id for cls in classes}


def test_file_inputs_are_checked_before_running(pack):
    patcher = pack.node_class("PSAModelPatcher")
    message = patcher.validate_inputs(adapter_name="no_such_adapter.safetensors")
    assert message.startswith("adapter_name 'no_such_adapter.safetensors' is not in models/psa_adapters")
    assert pack.node_class("PSAClearProfileCache").execute(confirm=False)[0] == "nothing deleted (confirm is off)"


def _stock_sample(model, args, sampler="euler", steps=None):
    import nodes as comfy_nodes

    return comfy_nodes.KSampler().sample(model, args["seed"], steps or args["steps"], args["cfg"], sampler, "normal",
                                         args["positive"], args["negative"], args["latent_image"])[0]["samples"]


@pytest.mark.parametrize("window", [(0.0, 0.0), (1.0, 1.0)], ids=["end-0", "start-1"])
def test_apply_profile_then_stock_sampler_refuses_when_no_step_is_in_the_window(pack, setup, window):
    args = _kwargs(setup, steps=1)
    model = pack.node_class("PSAApplyProfile").execute(args["model"], args["profile"], 1.0, *window)[0]
    with pytest.raises(PSAError, match="the PSA layers never ran during sampling"):
        _stock_sample(model, args)


def test_scale_zero_is_the_off_switch_also_over_an_earlier_apply(pack, setup):
    """Scale 0 samples the base model; re-applied over a model whose own window would fail the check,
    too: the one wrapper checks the profile in use."""
    import comfy.patcher_extension

    args = _kwargs(setup, steps=1)
    apply = pack.node_class("PSAApplyProfile")
    off = apply.execute(args["model"], args["profile"], 0.0, 0.0, 0.0)[0]
    second = apply.execute(apply.execute(args["model"], args["profile"], 1.0, 0.0, 0.0)[0], args["profile"], 0.0)[0]
    assert len(second.get_all_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE)) == 1
    base = _stock_sample(setup[0], args)
    assert torch.equal(_stock_sample(off, args), base)
    assert torch.equal(_stock_sample(second, args), base)


@pytest.mark.parametrize("start,end", [(float("nan"), 1.0), (0.0, float("nan"))])
def test_a_nan_window_bound_is_named(pack, setup, start, end):
    args = _kwargs(setup)
    with pytest.raises(PSAError, match=r"(start|end)_percent \(nan\) must be a number from 0 to 1"):
        pack.node_class("PSAApplyProfile").execute(args["model"], args["profile"], 1.0, start, end)
