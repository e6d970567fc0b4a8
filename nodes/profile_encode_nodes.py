"""Profiles from attributes (README, the section of that name): attributes + policy → spec; spec → PSA_PROFILE by LLM or nearest Sage user.

``PSA Profile Policy`` validates the attributes and decides the forbidden categories (the Sage
policy, the rule policy, explicit, or later by an LLM), showing them as text; it outputs a
``PSA_PROFILE_SPEC`` (no embedding yet).
``PSA Encode Profile (LLM)`` and ``PSA Nearest Sage User`` turn a spec into a ``PSA_PROFILE``.
Attributes typed into widgets are saved in the workflow and in image metadata; referencing an
attribute-only ``.json`` in models/psa_profiles keeps them out of both for new workflows, and
PSA Save Image (redacted) writes images without them (docs/security.md, "Privacy").
"""
from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import io

from psa_model.adapter.modules import REFERENCE_EMBED_DIM
from psa_model.confine import PathEscapeError, under_roots
from psa_model.profiles.boundaries import attribute_forbidden, boundary_warning
from psa_model.profiles.embedding_cache import EmbeddingCache, encode_with_cache
from psa_model.profiles.embedding_check import encoding_summary
from psa_model.profiles.llm_encoder import DEFAULT_TEMPLATE, ProfileEncoder, check_model_folder, load_template
from psa_model.profiles.policy import (
    REFERENCE_POLICY,
    SAGE_POLICY,
    apply_policy,
    categories_from_answer,
    fill_category_prompt,
    policy_explanation,
)
from psa_model.profiles.profile import ProfileLabel, PSAProfile, load_sage_user
from psa_model.profiles.recipe import (
    DTYPE_CHOICES,
    NOTATION_CHOICES,
    POOLING_CHOICES,
    RELIGION_NONE_CHOICES,
    compute_dtype,
    recipe_from_choices,
)
from psa_model.profiles.sage_nearest import nearest_sage_user
from psa_model.profiles.schema import (
    GENDERS,
    MENTAL_CONDITIONS,
    PHYSICAL_CONDITIONS,
    RELIGIONS,
    StructuredProfile,
    is_attribute_profile_file,
    load_structured_profile,
)
from psa_model.profiles.vocabulary import ProfileError

from . import folders
from .adapter_nodes import CATEGORY
from .profile_nodes import Profile

SPEC = "PSA_PROFILE_SPEC"
ProfileSpec = io.Custom(SPEC)
NOT_GIVEN = "(not given)"
NO_FILE = "(none: use the widgets)"
DEFAULT_TEMPLATE_NAME = "(project default wording)"
# Saved workflows store these strings: add new ones, never rename. The first is the default.
SOURCES = (SAGE_POLICY, "rule policy", "explicit / from file", "LLM (needs PSA Encode Profile + category prompt)")
SOURCE_POLICIES = {SOURCES[0]: SAGE_POLICY, SOURCES[1]: REFERENCE_POLICY}
EXPLICIT = SOURCES[2]
CACHE_DIR_NAME = "psa_embedding_cache"


def _llm_roots() -> list[Path]:
    return [Path(p) for name in folders.LLM_FOLDERS for p in folder_paths.get_folder_paths(name)]


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


class PSAProfilePolicy(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        def opt(values):
            return [NOT_GIVEN, *values]
        return io.Schema(
            node_id="PSAProfilePolicy",
            display_name="PSA Profile Policy",
            category=CATEGORY,
            description=("Builds a validated profile from attributes (or an attribute-only .json in models/psa_profiles) "
                         "and decides its forbidden categories: by the Sage policy (derived from the labels the "
                         "published adapters were trained on; the default, best for PSA Nearest Sage User), by the "
                         "rule policy (the rules the PSA reference prompt states), or explicitly. Shows "
                         "forbidden/allowed and the rules that fired as text."),
            inputs=[
                io.Combo.Input("profile_file", options=[NO_FILE, *attribute_profile_files()],
                               tooltip="Attribute-only profile .json in models/psa_profiles. When chosen, the attribute "
                                       "widgets are ignored and the file's attributes are not written into the "
                                       "workflow — but values still in the widgets are saved in it and in image "
                                       "metadata; reset them, or save with PSA Save Image (redacted)."),
                io.Int.Input("age", default=-1, min=-1, max=120,
                             tooltip="Age in years (0–120); -1 = not given. Saved in the workflow."),
                io.Combo.Input("gender", options=opt(GENDERS),
                               tooltip="Gender (Sage vocabulary). Saved in the workflow."),
                io.Combo.Input("religion", options=opt(RELIGIONS),
                               tooltip="Religion (Sage vocabulary). Saved in the workflow."),
                io.Combo.Input("mental_condition", options=opt(MENTAL_CONDITIONS),
                               tooltip="Mental condition or trauma history (Sage vocabulary). Saved in the workflow."),
                io.Combo.Input("physical_condition", options=opt(PHYSICAL_CONDITIONS),
                               tooltip="Physical condition (Sage vocabulary). Saved in the workflow."),
                io.Combo.Input("forbidden_source", options=list(SOURCES),
                               tooltip="Sage policy: the table derived from the Sage users' labels (matches them for "
                                       "every Sage user); rule policy: the reference prompt's rules; explicit: the "
                                       "list below (or the file's 'forbidden'); LLM: decided later by PSA Encode "
                                       "Profile with a category prompt."),
                io.String.Input("forbidden", default="",
                                tooltip="Comma-separated categories (Hate, Harassment, Violence, Self-Harm, Sexuality, "
                                        "Shocking, Propaganda); only for 'explicit'."),
            ],
            outputs=[
                ProfileSpec.Output(display_name="profile_spec", tooltip="Validated profile (attributes + categories), "
                                   "to encode with the LLM or match to a Sage user."),
                io.String.Output(display_name="forbidden", tooltip="Forbidden categories, comma-separated."),
                io.String.Output(display_name="allowed", tooltip="Allowed categories, comma-separated."),
                io.String.Output(display_name="explanation", tooltip="Which rules fired, and the rule table."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, profile_file, **_) -> str:
        return "" if profile_file == NO_FILE else folders.file_fingerprint(folders.PROFILES, profile_file)

    @classmethod
    def validate_inputs(cls, profile_file) -> bool | str:
        return folders.check_choice("profile_file", profile_file, [NO_FILE, *attribute_profile_files()],
                                    "models/psa_profiles as an attribute-only .json")

    @classmethod
    def execute(cls, profile_file, age, gender, religion, mental_condition, physical_condition, forbidden_source,
                forbidden) -> io.NodeOutput:
        if profile_file != NO_FILE:
            spec = load_structured_profile(folders.full_path(folders.PROFILES, profile_file))
        else:
            spec = StructuredProfile.create(
                age=None if age < 0 else age, gender=_given(gender), religion=_given(religion),
                mental_condition=_given(mental_condition), physical_condition=_given(physical_condition),
                forbidden=forbidden if forbidden_source == EXPLICIT and forbidden.strip() else None,
                name="profile")
        if forbidden_source in SOURCE_POLICIES:
            result = apply_policy(spec, SOURCE_POLICIES[forbidden_source])
            spec = spec.with_categories(result.forbidden)
            explanation = policy_explanation(result, SOURCE_POLICIES[forbidden_source])
        elif forbidden_source == EXPLICIT:
            if spec.forbidden is None:
                raise ProfileError("forbidden_source is 'explicit' but no categories were given (type them in "
                                   "'forbidden' or put 'forbidden' into the profile file; an empty list is written [])")
            explanation = "forbidden categories given explicitly"
            warning = boundary_warning(spec.name or "profile", spec.forbidden, attribute_forbidden(spec))
            if warning:
                explanation += "\n" + warning
        else:
            spec = StructuredProfile.create(**{**spec.to_dict(), "forbidden": None, "allowed": None,
                                               "name": spec.name})
            explanation = "forbidden categories: to be decided by the LLM in PSA Encode Profile"
        fmt = lambda c: "undecided" if c is None else (", ".join(c) or "nothing")  # noqa: E731
        return io.NodeOutput(spec, fmt(spec.forbidden), fmt(spec.allowed), explanation)


class PSAEncodeProfileLLM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAEncodeProfileLLM",
            display_name="PSA Encode Profile (LLM)",
            category=CATEGORY,
            description=("Encodes a profile spec with a local LLM by the published recipe (template → chat template → "
                         "mean of the last hidden states in the model's dtype; categories as Python lists). Offline "
                         f"only; the published adapters need Qwen2.5-7B-Instruct ({REFERENCE_EMBED_DIM}) and the "
                         "reference template. "
                         "The summary lists the recipe and the embedding's norm. Results are cached on disk per "
                         "recipe."),
            inputs=[
                ProfileSpec.Input("profile_spec", tooltip="From PSA Profile Policy."),
                io.Combo.Input("llm_name", options=llm_folders(),
                               tooltip="Hugging Face causal-LM folder in models/LLM or models/psa_llm."),
                io.Combo.Input("template", options=template_files(),
                               tooltip="Profile text template (.txt in the LLM folders) with <<AGE>> <<AGE_GROUP>> "
                                       "<<GENDER>> <<RELIGION>> <<MENTAL>> <<PHYSICAL>> <<BANNED>> <<ALLOWED>>."),
                io.Int.Input("embedding_size", default=REFERENCE_EMBED_DIM, min=0, max=65536,
                             tooltip=f"The adapter's embedding size ({REFERENCE_EMBED_DIM} for the published "
                                     "adapters); 0 = do not check."),
                io.Combo.Input("cache", options=["use", "refresh", "off"],
                               tooltip="use: reuse embeddings computed before; refresh: recompute and overwrite; "
                                       "off: no cache."),
                io.String.Input("category_prompt", multiline=True, default="", optional=True,
                                tooltip="Only when the spec's categories are undecided: a prompt containing "
                                        "<<USER_DATA>>; the LLM's answer is scanned for category names."),
                io.Combo.Input("pooling", options=list(POOLING_CHOICES), optional=True,
                               tooltip="mean: the published recipe (what the published adapters were trained on); "
                                       "sum: the reference's later pipeline variant, about token-count times larger."),
                io.Combo.Input("precision", options=list(DTYPE_CHOICES), optional=True,
                               tooltip="model dtype: run and pool in the dtype config.json names (bfloat16 for "
                                       "Qwen2.5, also on CPU), as published; float32: slower, not the published "
                                       "numbers."),
                io.Combo.Input("category_notation", options=list(NOTATION_CHOICES), optional=True,
                               tooltip="How <<BANNED>>/<<ALLOWED>> are written: ['Propaganda', 'Sexuality'] as in "
                                       "the Sage table (published), Sexuality, Propaganda, or the forbidden ones only "
                                       "(allowed written 'every other category': the categories stay legible in "
                                       "the embedding; for adapters trained that way)."),
                io.Combo.Input("religion_none", options=list(RELIGION_NONE_CHOICES), optional=True,
                               tooltip="The text for religion 'None': the published run read it as a missing value "
                                       "and wrote 'nan'."),
            ],
            outputs=[Profile.Output(display_name="profile", tooltip="The user profile (embedding + labels)."),
                     io.String.Output(display_name="summary", tooltip="Forbidden/allowed categories, the recipe, model "
                                      "and template identity, the embedding's norm (with a warning when off the "
                                      "published range) and cache status.")],
        )

    @classmethod
    def validate_inputs(cls, llm_name, template) -> bool | str:
        found = folders.check_choice("llm_name", llm_name, llm_folders(), "models/LLM or models/psa_llm")
        return found if found is not True else folders.check_choice("template", template, template_files(),
                                                                     "the LLM folders")

    @classmethod
    def execute(cls, profile_spec, llm_name, template, embedding_size, cache, category_prompt="", pooling=None,
                precision=None, category_notation=None, religion_none=None) -> io.NodeOutput:
        folder = llm_path(llm_name)
        check_model_folder(folder, embedding_size or None)
        text = template_text(template)
        recipe = recipe_from_choices(pooling, precision, category_notation, religion_none)
        pbar = comfy.utils.ProgressBar(3)
        spec, derived = profile_spec, None

        def run(profiles):
            device = mm.get_torch_device()
            dtype = compute_dtype(folder, recipe)
            weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
            mm.free_memory(weights * (2 if dtype == mm.torch.float32 else 1), device)
            with ProfileEncoder(folder, text, embedding_size or None, device, recipe=recipe) as encoder:
                pbar.update_absolute(1)
                return encoder.encode(profiles, progress=lambda done, total: pbar.update_absolute(1 + done))

        if spec.forbidden is None:
            if not category_prompt.strip():
                raise ProfileError("the profile's forbidden categories are undecided: give a category_prompt "
                                   "(with <<USER_DATA>>) or choose the Sage policy, the rule policy or explicit in "
                                   "PSA Profile Policy")
            prompt = fill_category_prompt(category_prompt, spec)
            with ProfileEncoder(folder, text, embedding_size or None) as encoder:
                derived = categories_from_answer(encoder.generate(prompt))
            spec = spec.with_categories(derived.forbidden)
        store = None if cache == "off" else globals()["cache"]()
        embeddings, hits = encode_with_cache(folder, text, [spec], store, run, refresh=cache == "refresh",
                                             recipe=recipe)
        mm.soft_empty_cache()
        pbar.update_absolute(3)
        label = ProfileLabel(spec.name or "LLM profile", spec.forbidden, spec.allowed, f"LLM {llm_name}",
                             attribute_forbidden(spec))
        profile = PSAProfile(embeddings, (label,))
        note = "cache hit" if hits else "encoded"
        if derived is not None:
            note += "; categories derived by the LLM"
        return io.NodeOutput(profile, encoding_summary(profile, folder, text, recipe, note))


class PSANearestSageUser(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSANearestSageUser",
            display_name="PSA Nearest Sage User",
            category=CATEGORY,
            description=("The no-LLM path: picks the Sage user whose forbidden set equals the spec's (then the most "
                         "similar attributes) among the users with an embedding in <psa_profiles>/sage_embeddings, "
                         "and loads it."),
            inputs=[ProfileSpec.Input("profile_spec", tooltip="From PSA Profile Policy (undecided categories: "
                                      "attributes only).")],
            outputs=[Profile.Output(display_name="profile", tooltip="The nearest Sage user's profile."),
                     io.Int.Output(display_name="user_id", tooltip="Its User_ID."),
                     io.String.Output(display_name="summary", tooltip="Why it was chosen.")],
        )

    @classmethod
    def execute(cls, profile_spec) -> io.NodeOutput:
        folder = folders.sage_folder()
        match = nearest_sage_user(profile_spec, folder)
        profile = load_sage_user(folder, match.user_id)
        return io.NodeOutput(profile, int(match.user_id), f"{profile.describe()}\n{match.explain()}")


class PSAClearProfileCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAClearProfileCache",
            display_name="PSA Clear Profile Cache",
            category=CATEGORY,
            description="Deletes every cached LLM profile embedding (user/psa_embedding_cache).",
            is_output_node=True,
            inputs=[io.Boolean.Input("confirm", default=False, tooltip="Must be on to delete.")],
            outputs=[io.String.Output(display_name="report", tooltip="How many cache files were deleted.")],
        )

    @classmethod
    def execute(cls, confirm) -> io.NodeOutput:
        if not confirm:
            return io.NodeOutput("nothing deleted (confirm is off)")
        return io.NodeOutput(f"deleted {cache().clear()} cached embeddings")


NODES = [PSAProfilePolicy, PSAEncodeProfileLLM, PSANearestSageUser, PSAClearProfileCache]
