"""The reference's samplers for SamplerCustom(-Advanced): PSA PLMS Sampler and Schedule (SD1.5),
PSA Euler Sampler (SDXL, with ComfyUI's ``ddim_uniform`` schedule).

The algorithms are :mod:`psa_model.sampling` (docs/reference-parity.md, "Sampling"); these nodes
only hand them to ComfyUI's custom-sampling API as a SAMPLER (``comfy.samplers.KSAMPLER``) and a
SIGMAS tensor, so nothing is added to ComfyUI's own sampler or scheduler lists.
"""
from __future__ import annotations

from collections.abc import Callable

import comfy.samplers
import torch
from comfy_api.latest import io

from psa_model.sampling.euler import sample_euler
from psa_model.sampling.plms import plms_sigmas, sample_plms

from .adapter_nodes import CATEGORY


SCALINGS = ("comfyui", "diffusers")
SCALING_TOOLTIP = ("comfyui: ComfyUI's start (σ·noise) and result. diffusers: start from √(σ²+1)·noise and return "
                   "the latent scaled as diffusers decodes it, as the reference does; needs an empty latent "
                   "(text to image).")


def _check_scaling(node: str, scaling: str) -> None:
    if scaling not in SCALINGS:
        raise ValueError(f"{node}: scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")


def _with_diffusers_scaling(node: str, sample):
    """``sample`` with diffusers' start and end scaling; refuses anything but pure noise (an empty latent)."""
    def sample_from_empty_latent(model, x, sigmas, **kwargs):
        latent = getattr(model, "latent_image", None)  # ComfyUI's sampler wrapper holds the input latent
        if not isinstance(latent, torch.Tensor) or bool(torch.any(latent != 0)):
            raise ValueError(f"{node}: scaling 'diffusers' needs an empty latent (text to image, e.g. from "
                             "Empty Latent Image); use scaling 'comfyui' for image-to-image or inpainting")
        return sample(model, x, sigmas, diffusers_scaling=True, **kwargs)
    return sample_from_empty_latent


class _ReferenceSampler(io.ComfyNode):
    """A SAMPLER node over one of :mod:`psa_model.sampling`'s samplers, with the ``scaling`` input."""

    NODE_ID: str
    DISPLAY_NAME: str
    DESCRIPTION: str
    SAMPLE: Callable[..., torch.Tensor]  # a psa_model.sampling sampler taking diffusers_scaling=

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=cls.NODE_ID, display_name=cls.DISPLAY_NAME, category=CATEGORY, description=cls.DESCRIPTION,
            inputs=[io.Combo.Input("scaling", options=list(SCALINGS), default="comfyui", tooltip=SCALING_TOOLTIP)],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustom / SamplerCustomAdvanced.")])

    @classmethod
    def execute(cls, scaling: str = "comfyui") -> io.NodeOutput:
        _check_scaling(cls.DISPLAY_NAME, scaling)
        sample = _with_diffusers_scaling(cls.DISPLAY_NAME, cls.SAMPLE) if scaling == "diffusers" else cls.SAMPLE
        return io.NodeOutput(comfy.samplers.KSAMPLER(sample))


class PSAPLMSSampler(_ReferenceSampler):
    NODE_ID, DISPLAY_NAME = "PSAPLMSSampler", "PSA PLMS Sampler"
    DESCRIPTION = ("Pseudo linear multistep (PLMS), diffusers' default SD1.5 scheduler and so the PSA reference's: "
                   "a second-order first step (one extra model call), then Adams–Bashforth steps of order 2, 3 "
                   "and 4. Use with PSA PLMS Schedule in SamplerCustom.")
    SAMPLE = staticmethod(sample_plms)


class PSAEulerSampler(_ReferenceSampler):
    NODE_ID, DISPLAY_NAME = "PSAEulerSampler", "PSA Euler Sampler"
    DESCRIPTION = ("Euler steps, as diffusers' Euler discrete scheduler (the SDXL default, so the PSA reference's "
                   "SDXL sampler) takes them; with scaling 'diffusers' it also starts from diffusers' initial "
                   "noise scale. Use with a ddim_uniform schedule (BasicScheduler) in SamplerCustom for the "
                   "reference's timesteps.")
    SAMPLE = staticmethod(sample_euler)


class PSAPLMSSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAPLMSSchedule", display_name="PSA PLMS Schedule", category=CATEGORY,
            description="The reference's SD1.5 noise levels: diffusers' \"leading\" timesteps with offset 1 "
                        "(981, 961, …, 1 for 50 steps), and a last step that stops at the first training "
                        "timestep's noise level instead of 0.",
            inputs=[
                io.Model.Input("model", tooltip="The model to sample (its noise table gives the levels)."),
                io.Int.Input("steps", default=50, min=1, max=500, tooltip="Number of steps (the reference: 50)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="steps + 1 noise levels, for SamplerCustom's sigmas input.")])

    @classmethod
    def execute(cls, model, steps: int) -> io.NodeOutput:
        sampling = model.get_model_object("model_sampling")
        table = getattr(sampling, "sigmas", None)
        if not isinstance(table, torch.Tensor) or table.ndim != 1 or table.numel() < 2:
            raise ValueError("PSA PLMS Schedule: this model has no per-timestep noise table (model_sampling.sigmas); "
                             "connect an SD1.5-family (discrete-timestep) model")
        return io.NodeOutput(plms_sigmas(table.float().cpu(), steps))


NODES = [PSAPLMSSampler, PSAPLMSSchedule, PSAEulerSampler]
