"""Apply a profile to a PSA model, or sample with one (KSampler + profile)."""
from __future__ import annotations

import comfy.patcher_extension
import comfy.samplers
import nodes as comfy_nodes
from comfy_api.latest import io

from psa_model.adapter.patch import (FAIL_CLOSED_KEY, NEVER_RAN, PSAError, attach_profile, installed_adapter,
                                     require_psa_ran)

from . import folders
from .adapter_nodes import CATEGORY
from .profile_nodes import Profile


def _profile_inputs() -> list[io.Input]:
    return [
        Profile.Input("profile", tooltip="User profile(s): one for the whole batch, or one per latent."),
        io.Float.Input("psa_scale", default=1.0, min=0.0, max=5.0, step=0.05,
                       tooltip="Strength s of the user branch (1.0 = as trained; 0 = off, identical to the base)."),
    ]


def _window_inputs() -> list[io.Input]:
    return [
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Apply PSA from this fraction of the schedule on."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Stop applying PSA after this fraction of the schedule."),
    ]


def _ksampler_inputs() -> list[io.Input]:
    """KSampler's own inputs after ``model``, with the ranges and tooltips the running ComfyUI gives them."""
    base = comfy_nodes.KSampler.INPUT_TYPES()["required"]

    def opts(name: str, *keys: str) -> dict:
        return {k: base[name][1][k] for k in (*keys, "tooltip") if k in base[name][1]}

    number = ("default", "min", "max", "step")
    return [
        io.Int.Input("seed", **opts("seed", *number, "control_after_generate")),
        io.Int.Input("steps", **opts("steps", *number)),
        io.Float.Input("cfg", **opts("cfg", *number, "round")),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, **opts("sampler_name")),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, **opts("scheduler")),
        io.Conditioning.Input("positive", **opts("positive")),
        io.Conditioning.Input("negative", **opts("negative")),
        io.Latent.Input("latent_image", **opts("latent_image")),
        io.Float.Input("denoise", **opts("denoise", *number)),
    ]


def apply_profile(model, profile, psa_scale: float, start_percent: float = 0.0, end_percent: float = 1.0):
    """MODEL (with a PSA adapter) + profile → MODEL clone conditioned on the profile."""
    if installed_adapter(model.model_options) is None:
        raise PSAError("this MODEL has no PSA adapter: connect it through 'PSA Model Patcher' first")
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if not 0.0 <= value <= 1.0:  # also NaN
            raise PSAError(f"{name} ({value}) must be a number from 0 to 1")
    if start_percent > end_percent:
        raise PSAError(f"start_percent ({start_percent}) must not exceed end_percent ({end_percent})")
    sigma_range = None
    if (start_percent, end_percent) != (0.0, 1.0):
        sampling = model.get_model_object("model_sampling")
        sigma_range = (float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))
    try:
        personal = attach_profile(model, profile.embeddings, psa_scale, sigma_range,
                                  source=f"profile {', '.join(profile.names())}")
    except ValueError as exc:
        raise PSAError(f"profile {profile.names()} does not fit the adapter: {exc}") from None
    # Fail closed for any sampler: ComfyUI runs this wrapper around every sampling of the model.
    if not personal.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, FAIL_CLOSED_KEY):
        personal.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, FAIL_CLOSED_KEY,
                                      require_psa_ran)
    return personal


class PSAApplyProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAApplyProfile",
            display_name="PSA Apply Profile",
            category=CATEGORY,
            description=("Conditions a PSA model on a user profile, for any sampler (KSampler Advanced, "
                         "SamplerCustom...). Changing only the profile re-uses the loaded, patched model. Sampling "
                         "raises if no PSA layer ran (psa_scale 0 is the off switch). A node that takes another "
                         "model's options, such as ModelMergeSimple with this model as model2, drops PSA unseen."),
            inputs=[io.Model.Input("model", tooltip="Output of PSA Model Patcher."), *_profile_inputs(),
                    *_window_inputs()],
            outputs=[io.Model.Output(display_name="model", tooltip="The PSA model conditioned on the profile.")],
        )

    @classmethod
    def execute(cls, model, profile, psa_scale, start_percent=0.0, end_percent=1.0) -> io.NodeOutput:
        return io.NodeOutput(apply_profile(model, profile, psa_scale, start_percent, end_percent))


class PSAKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAKSampler",
            display_name="PSA KSampler (profile)",
            category=CATEGORY,
            description=("KSampler with a user profile: denoises with the PSA model conditioned on the profile. "
                         "Raises instead of returning an unpersonalized image if the PSA layers did not run."),
            inputs=[io.Model.Input("model", tooltip="Output of PSA Model Patcher."), *_profile_inputs(),
                    *_ksampler_inputs(), *_window_inputs()],
            outputs=[io.Latent.Output(tooltip="The denoised latent.")],
        )

    @classmethod
    def validate_inputs(cls, sampler_name, scheduler) -> bool | str:
        # ComfyUI's KSampler silently replaces an unknown sampler or scheduler by its first one.
        found = folders.check_choice("sampler_name", sampler_name, list(comfy.samplers.KSampler.SAMPLERS),
                                     "ComfyUI's samplers")
        if found is not True:
            return found
        return folders.check_choice("scheduler", scheduler, list(comfy.samplers.KSampler.SCHEDULERS),
                                    "ComfyUI's schedulers")

    @classmethod
    def execute(cls, model, profile, psa_scale, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, denoise=1.0, start_percent=0.0, end_percent=1.0) -> io.NodeOutput:
        personal = apply_profile(model, profile, psa_scale, start_percent, end_percent)
        patch = installed_adapter(personal.model_options)
        before = patch.calls
        out = comfy_nodes.common_ksampler(personal, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                          latent_image, denoise=denoise)
        if psa_scale != 0.0 and patch.calls == before:
            raise PSAError(NEVER_RAN)
        return io.NodeOutput(*out)


NODES = [PSAApplyProfile, PSAKSampler]
