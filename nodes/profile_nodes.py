"""Profile nodes: load a profile file, a Sage user, a published preset; combine into a batch."""
from __future__ import annotations

from psa_model.profiles.profile import LEVEL_PRESETS, combine, load_preset, load_profile_file, load_sage_user

from . import folders
from .adapter_nodes import CATEGORY

PROFILE = "PSA_PROFILE"


class _ProfileNode:
    """What every profile node outputs: the profile and a one-line summary of it."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (PROFILE, "STRING")
    RETURN_NAMES = ("profile", "summary")
    OUTPUT_TOOLTIPS = ("The user profile (embedding + labels).", "Forbidden/allowed categories, when known.")

    @staticmethod
    def _outputs(profile) -> tuple:
        return (profile, profile.describe())


class PSALoadProfile(_ProfileNode):
    DESCRIPTION = "Loads a user profile (.npy/.safetensors embedding, or a profile .json) from models/psa_profiles."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"profile_name": (folders.profile_files(), {
            "tooltip": "Profile file in models/psa_profiles. Referencing a file keeps personal attributes "
                       "out of the workflow and the image metadata."})}}

    @classmethod
    def IS_CHANGED(cls, profile_name: str, **_):
        return folders.file_fingerprint(folders.PROFILES, profile_name)  # an edited file is reloaded

    def load(self, profile_name: str):
        profile = load_profile_file(folders.full_path(folders.PROFILES, profile_name), folders.roots(folders.PROFILES))
        return self._outputs(profile)


class PSASageUser(_ProfileNode):
    DESCRIPTION = ("A simulated Sage user by User_ID, from <psa_profiles>/sage_embeddings/{User_ID}.npy "
                   "(labels from sage_users.csv beside it).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"user_id": ("INT", {"default": 2, "min": 1, "max": 9999999,
                                                 "tooltip": "Sage User_ID (row number in sage_users.csv)."})}}

    def load(self, user_id: int):
        profile = load_sage_user(folders.sage_folder(), user_id)
        return self._outputs(profile)


class PSAProfilePreset(_ProfileNode):
    DESCRIPTION = ("The published PSA operating points: level 0 (least restrictive) to level 5 (most), each a "
                   "Sage user whose embedding must be in <psa_profiles>/sage_embeddings/.")

    @classmethod
    def INPUT_TYPES(cls):
        presets = list(LEVEL_PRESETS)
        return {"required": {"preset": (presets, {"default": presets[3],
                                                  "tooltip": "Published operating point (more restrictive upwards)."})}}

    def load(self, preset: str):
        profile = load_preset(folders.sage_folder(), preset)
        return self._outputs(profile)


class PSAProfileBatch(_ProfileNode):
    DESCRIPTION = "Combines profiles into a batch: with a latent batch of the same size, latent i uses profile i."
    FUNCTION = "combine"
    RETURN_NAMES = ("profiles", "summary")

    @classmethod
    def INPUT_TYPES(cls):
        tip = "A profile (or batch) to append, in order."
        return {"required": {"profile_1": (PROFILE, {"tooltip": tip}), "profile_2": (PROFILE, {"tooltip": tip})},
                "optional": {"profile_3": (PROFILE, {"tooltip": tip}), "profile_4": (PROFILE, {"tooltip": tip})}}

    def combine(self, profile_1, profile_2, profile_3=None, profile_4=None):
        profile = combine([p for p in (profile_1, profile_2, profile_3, profile_4) if p is not None])
        return self._outputs(profile)


NODES = {
    "PSALoadProfile": (PSALoadProfile, "PSA Load Profile"),
    "PSASageUser": (PSASageUser, "PSA Sage User"),
    "PSAProfilePreset": (PSAProfilePreset, "PSA Profile Preset"),
    "PSAProfileBatch": (PSAProfileBatch, "PSA Profile Batch"),
}
