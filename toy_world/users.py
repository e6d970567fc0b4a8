"""Toy users: attribute profiles in the project's schema, forbidden sets from the rule policy,
embeddings from the pack's own LLM profile path (docs/toy-world.md, "Users").

The language model is a small random Qwen2 built here with the real Qwen2.5 tokenizer that
ships with ComfyUI; embeddings come from :class:`psa_model.profiles.llm_encoder.ProfileEncoder`
— the code PSA Encode Profile (LLM) runs — so any attribute profile, seen or not, gets one.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from psa_model.profiles.policy import apply_policy
from psa_model.profiles.schema import StructuredProfile
from training.comfy_host import comfyui_path

LLM_HIDDEN = 64
AGES_MINOR = (9, 12, 14, 16, 17)
AGES_ADULT = (19, 24, 31, 38, 45, 52, 60, 67, 74)
MENTAL_UNSTABLE = ("depression", "anxiety", "war", "major accidents")
PHYSICAL_IMPAIRED = ("hearing impairment", "visual impairment", "intellectual disability")
RELIGIOUS = ("Islam", "Christianity", "Buddhism")

# The three demo profiles, permissive → strict.
DEMO_USERS = {
    "permissive": dict(age=34, gender="female", religion="None", mental_condition="healthy",
                       physical_condition="healthy"),
    "moderate": dict(age=41, gender="male", religion="Christianity", mental_condition="healthy",
                     physical_condition="healthy"),
    "strict": dict(age=13, gender="male", religion="Islam", mental_condition="anxiety",
                   physical_condition="visual impairment"),
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


def make_users(seed: int, per_combination: int = 3) -> list[dict]:
    """Attribute profiles covering every combination of the policy's rules (permissive → strict)."""
    rng = random.Random(seed)
    users = []
    for code in range(16):
        minor, unstable, impaired, religious = (bool(code >> k & 1) for k in range(4))
        for _ in range(per_combination):
            users.append(_random_user(rng, minor, unstable, impaired, religious))
    rng.shuffle(users)
    for i, u in enumerate(users):
        u["name"] = f"toy_user_{i:03d}"
    return users


def with_policy(user: dict) -> StructuredProfile:
    """The attribute profile with its forbidden categories from the rule policy."""
    profile = StructuredProfile.from_dict({k: v for k, v in user.items() if k not in ("forbidden", "allowed")})
    if user.get("forbidden") is not None:
        return profile.with_categories(user["forbidden"])
    return profile.with_categories(apply_policy(profile).forbidden)


def load_users(path: Path) -> list[dict]:
    """A user file: a JSON list of attribute profiles (the schema's keys, optional ``name``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of attribute profiles")
    return data


def encode_users(llm_folder: Path, profiles: list[StructuredProfile]) -> np.ndarray:
    """Embeddings through the pack's LLM encoder (the PSA Encode Profile (LLM) code path)."""
    from psa_model.profiles.llm_encoder import ProfileEncoder  # noqa: PLC0415 - heavy (torch): keeps this module light to import

    with ProfileEncoder(llm_folder) as encoder:
        return encoder.encode(profiles, batch_size=8).numpy().astype(np.float32)
