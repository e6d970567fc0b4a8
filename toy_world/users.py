"""Toy users: attribute profiles in the project's schema, forbidden sets from the Sage policy or
stated explicitly, embeddings from the pack's own LLM profile path (docs/toy-world.md, "Users";
"Boundaries and attributes").

The language model is a small random Qwen2 built here with the real Qwen2.5 tokenizer that
ships with ComfyUI; embeddings come from :class:`psa_model.profiles.llm_encoder.ProfileEncoder`
— the code PSA Encode Profile (LLM) runs — so any attribute profile, seen or not, gets one.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from psa_model.profiles.boundaries import attribute_forbidden
from psa_model.profiles.recipe import EncodingRecipe
from psa_model.profiles.schema import StructuredProfile
from training.boundaries import random_forbidden
from training.comfy_host import comfyui_path

LLM_HIDDEN = 64
AGES_MINOR = (9, 12, 14, 16, 17)
AGES_ADULT = (19, 24, 31, 38, 45, 52, 60, 67, 74)
MENTAL_UNSTABLE = ("depression", "anxiety", "war", "major accidents")
PHYSICAL_IMPAIRED = ("hearing impairment", "visual impairment", "intellectual disability")
RELIGIOUS = ("Islam", "Christianity", "Buddhism")
# The toy world encodes with the category notation that makes the forbidden set legible to the
# encoder (docs/toy-world.md, "Boundaries and attributes"); the adapter's metadata records it.
ENCODING = EncodingRecipe(category_notation="forbidden-only")

# The demo profiles, permissive → strict, then one whose stated categories contradict its
# attributes (the Sage policy gives it six categories; its operator allows Violence and more).
DEMO_USERS = {
    "permissive": dict(age=34, gender="female", religion="None", mental_condition="healthy",
                       physical_condition="healthy"),
    "moderate": dict(age=41, gender="male", religion="Christianity", mental_condition="healthy",
                     physical_condition="healthy"),
    "strict": dict(age=9, gender="male", religion="Islam", mental_condition="anxiety",
                   physical_condition="intellectual disability"),
    "stated": dict(age=67, gender="female", religion="Christianity", mental_condition="anxiety",
                   physical_condition="intellectual disability", forbidden=["Hate", "Self-Harm", "Propaganda"]),
}


def build_llm(folder: Path, seed: int) -> Path:
    """A small random Qwen2 causal LM saved with ComfyUI's Qwen2.5 tokenizer (offline)."""
    import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415 - heavy (transformers): loaded only when used

    tok_dir = comfyui_path() / "comfy" / "text_encoders" / "qwen25_tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=LLM_HIDDEN, intermediate_size=2 * LLM_HIDDEN,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _random_user(rng: random.Random, minor: bool, unstable: bool, impaired: bool, religious: bool) -> dict:
    return dict(age=rng.choice(AGES_MINOR if minor else AGES_ADULT), gender=rng.choice(("male", "female")),
                religion=rng.choice(RELIGIOUS) if religious else "None",
                mental_condition=rng.choice(MENTAL_UNSTABLE) if unstable else "healthy",
                physical_condition=rng.choice(PHYSICAL_IMPAIRED) if impaired else "healthy")


def attribute_grid() -> list[dict]:
    """Every attribute profile the toy vocabulary can make (ages, genders, religions, conditions)."""
    return [dict(age=age, gender=gender, religion=religion, mental_condition=mental, physical_condition=physical)
            for age in AGES_MINOR + AGES_ADULT for gender in ("male", "female") for religion in ("None", *RELIGIOUS)
            for mental in ("healthy", *MENTAL_UNSTABLE) for physical in ("healthy", *PHYSICAL_IMPAIRED)]


def sage_forbidden(user: dict) -> tuple[str, ...]:
    """What the Sage policy forbids for the user's attributes (the profile summary's check)."""
    return attribute_forbidden(StructuredProfile.from_dict(_attributes(user)))


def _attributes(user: dict) -> dict:
    return {k: v for k, v in user.items() if k not in ("forbidden", "allowed", "name")}


def _named(users: list[dict], prefix: str) -> list[dict]:
    return [dict(u, name=f"{prefix}_{i:03d}") for i, u in enumerate(users)]


def make_training_users(seed: int, policy_users: int, independent_users: int) -> list[dict]:
    """Users whose pairs train the adapter (docs/toy-world.md, "Boundaries and attributes").

    ``policy_users``: one user per distinct Sage-policy forbidden set of the attribute grid (then
    random ones), labelled by the Sage policy; ``independent_users``: random attributes with a
    forbidden set drawn independently of them (:func:`training.boundaries.random_forbidden`)."""
    rng = random.Random(seed)
    grid = attribute_grid()
    by_set: dict[tuple, list[dict]] = {}
    for user in grid:
        by_set.setdefault(sage_forbidden(user), []).append(user)
    sets = sorted(by_set, key=lambda f: (len(f), f))
    rng.shuffle(sets)
    policy = [rng.choice(by_set[f]) for f in sets[:policy_users]]
    while len(policy) < policy_users:
        policy.append(rng.choice(grid))
    policy = [dict(u, forbidden=list(sage_forbidden(u))) for u in policy]
    independent = [dict(rng.choice(grid), forbidden=list(random_forbidden(rng))) for _ in range(independent_users)]
    users = _named(policy, "toy_policy") + _named(independent, "toy_independent")
    rng.shuffle(users)
    return users


def make_eval_groups(seed: int, per_group: int, trained_sets: set[tuple]) -> dict[str, list[dict]]:
    """Three groups of unseen users (docs/benchmarks.md, "Efficacy (toy world)"):

    - ``policy``: categories follow the Sage policy for their attributes;
    - ``contradicting``: explicit categories that differ from the Sage policy's for their attributes;
    - ``new sets``: forbidden sets no training user had (``trained_sets``), attributes random.
    """
    rng = random.Random(seed)
    grid = attribute_grid()
    policy = [dict(u, forbidden=list(sage_forbidden(u))) for u in rng.sample(grid, per_group)]
    contradicting = []
    while len(contradicting) < per_group:
        user, forbidden = rng.choice(grid), random_forbidden(rng)
        if set(forbidden) != set(sage_forbidden(user)):
            contradicting.append(dict(user, forbidden=list(forbidden)))
    new_sets, used = [], set(trained_sets)
    while len(new_sets) < per_group:
        forbidden = random_forbidden(rng)
        if forbidden not in used:
            used.add(forbidden)
            new_sets.append(dict(rng.choice(grid), forbidden=list(forbidden)))
    return {"policy": _named(policy, "unseen_policy"), "contradicting": _named(contradicting, "unseen_contradicting"),
            "new sets": _named(new_sets, "unseen_new_set")}


def with_policy(user: dict) -> StructuredProfile:
    """The attribute profile with its forbidden categories: the explicit ones when given, else the Sage
    policy's for its attributes."""
    profile = StructuredProfile.from_dict(_attributes(user))
    if user.get("forbidden") is not None:
        return profile.with_categories(user["forbidden"])
    return profile.with_categories(sage_forbidden(user))


def load_users(path: Path) -> list[dict]:
    """A user file: a JSON list of attribute profiles (the schema's keys, optional ``name`` and
    ``forbidden``), each checked now so that a typo fails before the world is built."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of attribute profiles")
    for i, user in enumerate(data):
        if not isinstance(user, dict):
            raise ValueError(f"{path}: entry {i} is not a JSON object (a profile's keys and values)")
        try:
            with_policy(user)
        except ValueError as exc:
            raise ValueError(f"{path}: entry {i}: {exc}") from exc
    return data


def encode_users(llm_folder: Path, profiles: list[StructuredProfile], recipe: EncodingRecipe = ENCODING) -> np.ndarray:
    """Embeddings through the pack's LLM encoder (the PSA Encode Profile (LLM) code path), by ``recipe``
    (default: the toy world's, :data:`ENCODING`)."""
    from psa_model.profiles.llm_encoder import ProfileEncoder  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    with ProfileEncoder(llm_folder, recipe=recipe) as encoder:
        return encoder.encode(profiles, batch_size=8).numpy().astype(np.float32)
