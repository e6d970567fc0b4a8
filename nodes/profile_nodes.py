"""Profile nodes: load a profile file, a Sage user, a published preset; combine into a batch."""
from __future__ import annotations

from comfy_api.latest import io

from psa_model.profiles.embedding_check import describe_with_norms
from psa_model.profiles.profile import LEVEL_PRESETS, combine, load_preset, load_profile_file, load_sage_user

from . import folders
from .adapter_nodes import CATEGORY

PROFILE = "PSA_PROFILE"
Profile = io.Custom(PROFILE)


def profile_outputs(profile_name: str = "profile") -> list[io.Output]:
    """What every profile node outputs: the profile and a one-line summary of it."""
    return [Profile.Output(display_name=profile_name, tooltip="The user profile (embedding + labels)."),
            io.String.Output(display_name="summary", tooltip="Forbidden/allowed categories, when known, and each "
                             "embedding's norm (with a warning when off the published range).")]


def _outputs(profile) -> io.NodeOutput:
    return io.NodeOutput(profile, describe_with_norms(profile))


def _schema(node_id: str, display_name: str, description: str, inputs: list[io.Input],
            profile_name: str = "profile") -> io.Schema:
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=inputs, outputs=profile_outputs(profile_name))


class PSALoadProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema("PSALoadProfile", "PSA Load Profile",
                       "Loads a user profile (.npy/.safetensors embedding, or a profile .json) from models/psa_profiles.",
                       [io.Combo.Input("profile_name", options=folders.profile_files(),
                                       tooltip="Profile file in models/psa_profiles. Referencing a file keeps personal "
                                               "attributes out of the workflow and the image metadata.")])

    @classmethod
    def validate_inputs(cls, profile_name) -> bool | str:
        return folders.check_choice("profile_name", profile_name, folders.profile_files(), "models/psa_profiles")

    @classmethod
    def fingerprint_inputs(cls, profile_name: str, **_) -> str:
        return folders.file_fingerprint(folders.PROFILES, profile_name)  # an edited file is reloaded

    @classmethod
    def execute(cls, profile_name: str) -> io.NodeOutput:
        return _outputs(load_profile_file(folders.full_path(folders.PROFILES, profile_name),
                                          folders.roots(folders.PROFILES)))


class PSASageUser(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema("PSASageUser", "PSA Sage User",
                       "A simulated Sage user by User_ID, from <psa_profiles>/sage_embeddings/{User_ID}.npy "
                       "(labels from sage_users.csv beside it).",
                       [io.Int.Input("user_id", default=2, min=1, max=9999999,
                                     tooltip="Sage User_ID (row number in sage_users.csv).")])

    @classmethod
    def execute(cls, user_id: int) -> io.NodeOutput:
        return _outputs(load_sage_user(folders.sage_folder(), user_id))


class PSAProfilePreset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        presets = list(LEVEL_PRESETS)
        return _schema("PSAProfilePreset", "PSA Profile Preset",
                       "The published PSA operating points: level 0 (least restrictive) to level 5 (most), each a "
                       "Sage user whose embedding must be in <psa_profiles>/sage_embeddings/.",
                       [io.Combo.Input("preset", options=presets, default=presets[3],
                                       tooltip="Published operating point (more restrictive upwards).")])

    @classmethod
    def execute(cls, preset: str) -> io.NodeOutput:
        return _outputs(load_preset(folders.sage_folder(), preset))


class PSAProfileBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        tip = "A profile (or batch) to append, in order."
        return _schema("PSAProfileBatch", "PSA Profile Batch",
                       "Combines profiles into a batch: with a latent batch of the same size, latent i uses profile i.",
                       [Profile.Input("profile_1", tooltip=tip), Profile.Input("profile_2", tooltip=tip),
                        Profile.Input("profile_3", tooltip=tip, optional=True),
                        Profile.Input("profile_4", tooltip=tip, optional=True)],
                       profile_name="profiles")

    @classmethod
    def execute(cls, profile_1, profile_2, profile_3=None, profile_4=None) -> io.NodeOutput:
        return _outputs(combine([p for p in (profile_1, profile_2, profile_3, profile_4) if p is not None]))


NODES = [PSALoadProfile, PSASageUser, PSAProfilePreset, PSAProfileBatch]
