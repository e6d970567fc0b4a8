"""Apply a profile to a PSA model, or sample with one (KSampler + profile)."""
from __future__ import annotations

import nodes as comfy_nodes

from psa_model.adapter.patch import PSAError, attach_profile, installed_adapter

from .adapter_nodes import CATEGORY
from .profile_nodes import PROFILE

_PROFILE_INPUTS = {
    "profile": (PROFILE, {"tooltip": "User profile(s): one for the whole batch, or one per latent."}),
    "psa_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.05,
                            "tooltip": "Strength s of the user branch (1.0 = as trained; 0 = off, identical to the base)."}),
}
_WINDOW_INPUTS = {
    "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Apply PSA from this fraction of the schedule on."}),
    "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Stop applying PSA after this fraction of the schedule."}),
}


def apply_profile(model, profile, psa_scale: float, start_percent: float = 0.0, end_percent: float = 1.0):
    """MODEL (with a PSA adapter) + profile → MODEL clone conditioned on the profile."""
    if installed_adapter(model.model_options) is None:
        raise PSAError("this MODEL has no PSA adapter: connect it through 'PSA Model Patcher' first")
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise PSAError(f"start_percent ({start_percent}) must not exceed end_percent ({end_percent})")
    sigma_range = None
    if (start_percent, end_percent) != (0.0, 1.0):
        sampling = model.get_model_object("model_sampling")
        sigma_range = (float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))
    try:
        return attach_profile(model, profile.embeddings, psa_scale, sigma_range,
                              source=f"profile {', '.join(profile.names())}")
    except ValueError as exc:
        raise PSAError(f"profile {profile.names()} does not fit the adapter: {exc}") from None


class PSAApplyProfile:
    DESCRIPTION = ("Conditions a PSA model on a user profile, for any sampler (KSampler Advanced, SamplerCustom...). "
                   "Changing only the profile re-uses the loaded, patched model.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The PSA model conditioned on the profile.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "Output of PSA Model Patcher."}), **_PROFILE_INPUTS,
                             **_WINDOW_INPUTS}}

    def apply(self, model, profile, psa_scale, start_percent=0.0, end_percent=1.0):
        return (apply_profile(model, profile, psa_scale, start_percent, end_percent),)


class PSAKSampler:
    DESCRIPTION = ("KSampler with a user profile: denoises with the PSA model conditioned on the profile. Raises "
                   "instead of returning an unpersonalized image if the PSA layers did not run.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)

    @classmethod
    def INPUT_TYPES(cls):
        base = comfy_nodes.KSampler.INPUT_TYPES()["required"]
        required = {"model": ("MODEL", {"tooltip": "Output of PSA Model Patcher."}), **_PROFILE_INPUTS}
        required.update({k: v for k, v in base.items() if k != "model"})
        required.update(_WINDOW_INPUTS)
        return {"required": required}

    def sample(self, model, profile, psa_scale, seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, denoise=1.0, start_percent=0.0, end_percent=1.0):
        personal = apply_profile(model, profile, psa_scale, start_percent, end_percent)
        patch = installed_adapter(personal.model_options)
        before = patch.calls
        out = comfy_nodes.common_ksampler(personal, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                          latent_image, denoise=denoise)
        if psa_scale != 0.0 and patch.calls == before:
            raise PSAError("the PSA layers never ran during sampling (another patch replaced the attention, or no "
                           "step fell inside start/end percent); refusing to return an unpersonalized image")
        return out

NODES = {
    "PSAApplyProfile": (PSAApplyProfile, "PSA Apply Profile"),
    "PSAKSampler": (PSAKSampler, "PSA KSampler (profile)"),
}
