"""Profiles from attributes (issue 5): attributes + policy → spec; spec → PSA_PROFILE by LLM or nearest Sage user.

``PSA Profile Policy`` validates the attributes and decides the forbidden categories (explicit or
the rule policy), showing them as text; it outputs a ``PSA_PROFILE_SPEC`` (no embedding yet).
``PSA Encode Profile (LLM)`` and ``PSA Nearest Sage User`` turn a spec into a ``PSA_PROFILE``.
Attributes typed into widgets are saved in the workflow and in image metadata; referencing an
attribute-only ``.json`` in models/psa_profiles keeps them out of both for new workflows, and
PSA Save Image (redacted) writes images without them (docs/security.md, "Privacy").
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from psa_model.confine import PathEscapeError, under_roots
from psa_model.profiles.embedding_cache import EmbeddingCache, encode_with_cache
from psa_model.profiles.llm_encoder import DEFAULT_TEMPLATE, ProfileEncoder, check_model_folder, load_template
from psa_model.profiles.policy import apply_policy, categories_from_answer, fill_category_prompt, policy_table
from psa_model.profiles.schema import (GENDERS, MENTAL_CONDITIONS, PHYSICAL_CONDITIONS, RELIGIONS, StructuredProfile,
                                      is_attribute_profile_file, load_structured_profile)
from psa_model.profiles.profile import ProfileError, ProfileLabel, PSAProfile, load_sage_user
from psa_model.profiles.sage_nearest import nearest_sage_user

from . import folders
from .adapter_nodes import CATEGORY
from .profile_nodes import PROFILE

SPEC = "PSA_PROFILE_SPEC"
LLM_FOLDERS = ("LLM", "psa_llm")
NOT_GIVEN = "(not given)"
NO_FILE = "(none: use the widgets)"
DEFAULT_TEMPLATE_NAME = "(project default wording)"
SOURCES = ("rule policy", "explicit / from file", "LLM (needs PSA Encode Profile + category prompt)")
CACHE_DIR_NAME = "psa_embedding_cache"


def register_llm_folders() -> None:
    for name in LLM_FOLDERS:
        default = os.path.join(folder_paths.models_dir, name)
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.folder_names_and_paths[name] = ([default], set())
        elif default not in folder_paths.folder_names_and_paths[name][0]:
            folder_paths.folder_names_and_paths[name][0].insert(0, default)


def _llm_roots() -> list[Path]:
    register_llm_folders()
    return [Path(p) for name in LLM_FOLDERS for p in folder_paths.get_folder_paths(name)]


def _glob_names(root: Path, pattern: str) -> list[Path]:
    try:
        return list(root.glob(pattern)) if root.is_dir() else []
    except OSError:  # an unreadable folder lists as empty (docs/security.md, "Listing")
        return []


def llm_folders() -> list[str]:
    """Sub-folders (one level, or two for ``org/model``) holding a ``config.json``."""
    names = set()
    for root in _llm_roots():
        for config in _glob_names(root, "*/config.json") + _glob_names(root, "*/*/config.json"):
            names.add(config.parent.relative_to(root).as_posix())
    return sorted(n for n in names if folders.listable(n))


def llm_path(name: str) -> Path:
    try:
        found = under_roots(name, _llm_roots(), "LLM folder")
    except PathEscapeError as exc:
        raise ProfileError(str(exc)) from None
    if found is not None and found.is_dir():
        return found
    raise FileNotFoundError(f"LLM folder '{name}' not found in {[str(r) for r in _llm_roots()]}; put a Hugging Face "
                            "model folder (config.json, tokenizer, *.safetensors) into models/LLM or models/psa_llm")


def template_files() -> list[str]:
    names = {p.name for root in _llm_roots() for p in _glob_names(root, "*.txt")}
    return [DEFAULT_TEMPLATE_NAME] + sorted(n for n in names if folders.listable(n))


def template_text(name: str) -> str:
    if name == DEFAULT_TEMPLATE_NAME:
        return load_template(DEFAULT_TEMPLATE)
    try:
        found = under_roots(name, _llm_roots(), "template")
    except PathEscapeError as exc:
        raise ProfileError(str(exc)) from None
    if found is not None and found.is_file():
        return load_template(found)
    raise FileNotFoundError(f"template file '{name}' not found in the LLM folders; put the .txt into models/LLM")


def attribute_profile_files() -> list[str]:
    """Candidate attribute-only ``.json`` files; never raises (a damaged file is listed and errors when chosen)."""
    out = []
    for name in folders.profile_files():
        if name.endswith(".json"):
            try:
                path = folder_paths.get_full_path(folders.PROFILES, name)
                listed = not path or is_attribute_profile_file(Path(path))  # not a regular file: errors when chosen
            except Exception:  # noqa: BLE001 - listing never fails (docs/security.md, "Listing")
                listed = True
            if listed:
                out.append(name)
    return out


def cache() -> EmbeddingCache:
    return EmbeddingCache(Path(folder_paths.get_user_directory()) / CACHE_DIR_NAME)


def _given(value: str) -> str | None:
    return None if value == NOT_GIVEN else value


class PSAProfilePolicy:
    DESCRIPTION = ("Builds a validated profile from attributes (or an attribute-only .json in models/psa_profiles) "
                   "and decides its forbidden categories: explicitly, or by the transparent rule policy "
                   "(the rules the PSA reference prompt states). Shows forbidden/allowed as text.")
    CATEGORY = CATEGORY
    FUNCTION = "build"
    RETURN_TYPES = (SPEC, "STRING", "STRING", "STRING")
    RETURN_NAMES = ("profile_spec", "forbidden", "allowed", "explanation")
    OUTPUT_TOOLTIPS = ("Validated profile (attributes + categories), to encode with the LLM or match to a Sage user.",
                       "Forbidden categories, comma-separated.", "Allowed categories, comma-separated.",
                       "Which rules fired, and the rule table.")

    @classmethod
    def INPUT_TYPES(cls):
        opt = lambda values: [NOT_GIVEN, *values]  # noqa: E731
        return {"required": {
            "profile_file": ([NO_FILE, *attribute_profile_files()], {
                "tooltip": "Attribute-only profile .json in models/psa_profiles. When chosen, the attribute widgets "
                           "are ignored and the file's attributes are not written into the workflow — but values "
                           "still in the widgets are saved in it and in image metadata; reset them, or save with "
                           "PSA Save Image (redacted)."}),
            "age": ("INT", {"default": -1, "min": -1, "max": 120,
                            "tooltip": "Age in years (0–120); -1 = not given. Saved in the workflow."}),
            "gender": (opt(GENDERS), {"tooltip": "Gender (Sage vocabulary). Saved in the workflow."}),
            "religion": (opt(RELIGIONS), {"tooltip": "Religion (Sage vocabulary). Saved in the workflow."}),
            "mental_condition": (opt(MENTAL_CONDITIONS), {"tooltip": "Mental condition or trauma history (Sage "
                                                          "vocabulary). Saved in the workflow."}),
            "physical_condition": (opt(PHYSICAL_CONDITIONS), {"tooltip": "Physical condition (Sage vocabulary). "
                                                              "Saved in the workflow."}),
            "forbidden_source": (list(SOURCES), {"tooltip": "rule policy: the audited rule table; explicit: the "
                                                 "list below (or the file's 'forbidden'); LLM: decided later by PSA "
                                                 "Encode Profile with a category prompt."}),
            "forbidden": ("STRING", {"default": "", "tooltip": "Comma-separated categories (Hate, Harassment, "
                                     "Violence, Self-Harm, Sexuality, Shocking, Propaganda); only for 'explicit'."}),
        }}

    @classmethod
    def IS_CHANGED(cls, profile_file, **_):
        return "" if profile_file == NO_FILE else folders.file_fingerprint(folders.PROFILES, profile_file)

    def build(self, profile_file, age, gender, religion, mental_condition, physical_condition, forbidden_source,
              forbidden):
        if profile_file != NO_FILE:
            spec = load_structured_profile(folders.full_path(folders.PROFILES, profile_file))
        else:
            spec = StructuredProfile.create(
                age=None if age < 0 else age, gender=_given(gender), religion=_given(religion),
                mental_condition=_given(mental_condition), physical_condition=_given(physical_condition),
                forbidden=forbidden if forbidden_source == SOURCES[1] and forbidden.strip() else None,
                name="profile")
        if forbidden_source == SOURCES[0]:
            result = apply_policy(spec)
            spec = spec.with_categories(result.forbidden)
            explanation = result.explain() + "\n\n" + policy_table()
        elif forbidden_source == SOURCES[1]:
            if spec.forbidden is None:
                raise ProfileError("forbidden_source is 'explicit' but no categories were given (type them in "
                                   "'forbidden' or put 'forbidden' into the profile file; an empty list is written [])")
            explanation = "forbidden categories given explicitly"
        else:
            spec = StructuredProfile.create(**{**spec.to_dict(), "forbidden": None, "allowed": None,
                                               "name": spec.name})
            explanation = "forbidden categories: to be decided by the LLM in PSA Encode Profile"
        fmt = lambda c: "undecided" if c is None else (", ".join(c) or "nothing")  # noqa: E731
        return (spec, fmt(spec.forbidden), fmt(spec.allowed), explanation)


class PSAEncodeProfileLLM:
    DESCRIPTION = ("Encodes a profile spec with a local LLM (the reference way: template → chat template → sum of "
                   "last hidden states). Offline only; the published adapters need Qwen2.5-7B-Instruct (3584) "
                   "and the reference template for identical embeddings. Results are cached on disk.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (PROFILE, "STRING")
    RETURN_NAMES = ("profile", "summary")
    OUTPUT_TOOLTIPS = ("The user profile (embedding + labels).", "Forbidden/allowed categories and cache status.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "profile_spec": (SPEC, {"tooltip": "From PSA Profile Policy."}),
            "llm_name": (llm_folders(), {"tooltip": "Hugging Face causal-LM folder in models/LLM or models/psa_llm."}),
            "template": (template_files(), {"tooltip": "Profile text template (.txt in the LLM folders) with "
                                            "<<AGE>> <<AGE_GROUP>> <<GENDER>> <<RELIGION>> <<MENTAL>> <<PHYSICAL>> "
                                            "<<BANNED>> <<ALLOWED>>."}),
            "embedding_size": ("INT", {"default": 3584, "min": 0, "max": 65536, "tooltip": "The adapter's "
                                       "embedding size (3584 for the published adapters); 0 = do not check."}),
            "cache": (["use", "refresh", "off"], {"tooltip": "use: reuse embeddings computed before; refresh: "
                                                  "recompute and overwrite; off: no cache."}),
        }, "optional": {
            "category_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "Only when the spec's "
                                           "categories are undecided: a prompt containing <<USER_DATA>>; the LLM's "
                                           "answer is scanned for category names."}),
        }}

    def encode(self, profile_spec, llm_name, template, embedding_size, cache, category_prompt=""):
        import comfy.model_management as mm
        import comfy.utils

        folder = llm_path(llm_name)
        check_model_folder(folder, embedding_size or None)
        text = template_text(template)
        pbar = comfy.utils.ProgressBar(3)
        spec, derived = profile_spec, None

        def run(profiles):
            device = mm.get_torch_device()
            dtype = mm.torch.bfloat16 if device.type == "cuda" else mm.torch.float32
            weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
            mm.free_memory(weights * (2 if dtype == mm.torch.float32 else 1), device)
            with ProfileEncoder(folder, text, embedding_size or None, device, dtype) as encoder:
                pbar.update_absolute(1)
                return encoder.encode(profiles, progress=lambda done, total: pbar.update_absolute(1 + done))

        if spec.forbidden is None:
            if not category_prompt.strip():
                raise ProfileError("the profile's forbidden categories are undecided: give a category_prompt "
                                   "(with <<USER_DATA>>) or choose the rule policy / explicit in PSA Profile Policy")
            prompt = fill_category_prompt(category_prompt, spec)
            with ProfileEncoder(folder, text, embedding_size or None) as encoder:
                derived = categories_from_answer(encoder.generate(prompt))
            spec = spec.with_categories(derived.forbidden)
        store = None if cache == "off" else globals()["cache"]()
        embeddings, hits = encode_with_cache(folder, text, [spec], store, run, refresh=cache == "refresh")
        mm.soft_empty_cache()
        pbar.update_absolute(3)
        label = ProfileLabel(spec.name or "LLM profile", spec.forbidden, spec.allowed, f"LLM {llm_name}")
        profile = PSAProfile(embeddings, (label,))
        note = "cache hit" if hits else "encoded"
        if derived is not None:
            note += "; categories derived by the LLM"
        return (profile, f"{profile.describe()}\n({note})")


class PSANearestSageUser:
    DESCRIPTION = ("The no-LLM path: picks the Sage user whose forbidden set equals the spec's (then the most similar "
                   "attributes) among the users with an embedding in <psa_profiles>/sage_embeddings, and loads it.")
    CATEGORY = CATEGORY
    FUNCTION = "resolve"
    RETURN_TYPES = (PROFILE, "INT", "STRING")
    RETURN_NAMES = ("profile", "user_id", "summary")
    OUTPUT_TOOLTIPS = ("The nearest Sage user's profile.", "Its User_ID.", "Why it was chosen.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"profile_spec": (SPEC, {"tooltip": "From PSA Profile Policy (undecided categories: "
                                                     "attributes only)."})}}

    def resolve(self, profile_spec):
        folder = folders.sage_folder()
        match = nearest_sage_user(profile_spec, folder)
        profile = load_sage_user(folder, match.user_id)
        return (profile, int(match.user_id), f"{profile.describe()}\n{match.explain()}")


class PSAClearProfileCache:
    DESCRIPTION = "Deletes every cached LLM profile embedding (user/psa_embedding_cache)."
    CATEGORY = CATEGORY
    FUNCTION = "clear"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("How many cache files were deleted.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"confirm": ("BOOLEAN", {"default": False, "tooltip": "Must be on to delete."})}}

    def clear(self, confirm):
        if not confirm:
            return ("nothing deleted (confirm is off)",)
        return (f"deleted {cache().clear()} cached embeddings",)


NODES = {
    "PSAProfilePolicy": (PSAProfilePolicy, "PSA Profile Policy"),
    "PSAEncodeProfileLLM": (PSAEncodeProfileLLM, "PSA Encode Profile (LLM)"),
    "PSANearestSageUser": (PSANearestSageUser, "PSA Nearest Sage User"),
    "PSAClearProfileCache": (PSAClearProfileCache, "PSA Clear Profile Cache"),
}
