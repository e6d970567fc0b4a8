"""LLM profile encoder (docs/profiles.md): profile → filled template → chat template → causal LM →
pooled last hidden layer, following an :class:`~.recipe.EncodingRecipe` (default: the published one —
masked mean in the model's dtype, categories in the users table's list notation).

Any local Hugging Face causal-LM folder works (default expectation: Qwen2.5-7B-Instruct, hidden
size 3584). Loading is strictly offline (``local_files_only=True`` and ``HF_HUB_OFFLINE`` set
while loading). Batches are padded on the *right*: with causal attention the real tokens then
see exactly what they see unpadded and keep positions 0..L-1, so a batched result equals the
one-by-one result (the reference padded on the left; with rotary positions only relative
positions enter attention, so that differs only by rounding).
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from .schema import StructuredProfile
from ..adapter.modules import REFERENCE_EMBED_DIM
from .vocabulary import MAX_JSON_BYTES, ProfileError
from .recipe import UNKNOWN, categories_text  # noqa: F401 - re-exported (older callers import them from here)
from .recipe import PUBLISHED_RECIPE, EncodingRecipe, compute_dtype, pool, template_values

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES_DIR / "profile_prompt.txt"
FALLBACK_CHAT_TEMPLATE = TEMPLATES_DIR / "qwen25_chat_template.jinja"
PLACEHOLDERS = ("<<AGE>>", "<<AGE_GROUP>>", "<<GENDER>>", "<<RELIGION>>", "<<MENTAL>>", "<<PHYSICAL>>",
                "<<BANNED>>", "<<ALLOWED>>")


class LLMEncoderError(ProfileError):
    """The LLM folder or template cannot be used."""


# --- template ---------------------------------------------------------------------------------
def load_template(path: Path | None = None) -> str:
    path = Path(path) if path is not None else DEFAULT_TEMPLATE
    if not path.is_file():
        raise LLMEncoderError(f"profile template file not found: {path}")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise LLMEncoderError(f"{path.name}: a profile template over 1 MiB is not one; remove it from the "
                                  "LLM folder")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise LLMEncoderError(f"{path.name}: the template is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise LLMEncoderError(f"{path.name}: cannot read the template ({exc.strerror})") from None
    check_template(text, path.name)
    return text


def check_template(text: str, source: str = "template") -> None:
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise LLMEncoderError(f"{source} is missing the placeholders {missing}; a profile template must contain "
                              f"all of {list(PLACEHOLDERS)}")


def fill_template(template: str, profile: StructuredProfile, recipe: EncodingRecipe = PUBLISHED_RECIPE) -> str:
    """The template with every placeholder replaced by :func:`~.recipe.template_values` (recipe's notation)."""
    check_template(template)
    if profile.forbidden is None:
        raise LLMEncoderError("the profile has no forbidden categories yet: give them, or derive them with the "
                              "rule policy or an LLM before encoding")
    text = template
    for key, value in template_values(profile, recipe).items():
        text = text.replace(key, value)  # <<AGE>> before <<AGE_GROUP>> is safe: the names differ after "AGE"
    return text


# --- model folder -----------------------------------------------------------------------------
def read_config(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise LLMEncoderError(f"LLM folder not found: {folder}")
    config = folder / "config.json"
    if not config.is_file():
        raise LLMEncoderError(f"{folder.name}: no config.json; expected a Hugging Face model folder "
                              "(config.json, tokenizer files, *.safetensors)")
    try:
        data = json.loads(config.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LLMEncoderError(f"{folder.name}/config.json cannot be read ({exc.__class__.__name__}); copy the "
                              "model folder again from its Hugging Face download") from None
    if not isinstance(data, dict):
        raise LLMEncoderError(f"{folder.name}/config.json is not a JSON object; copy the model folder again")
    return data


def hidden_size(config: dict) -> int:
    text_config = config.get("text_config")
    for source in (config, text_config if isinstance(text_config, dict) else {}):
        if "hidden_size" in source:
            value = source["hidden_size"]
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
            raise LLMEncoderError(f"config.json: hidden_size must be a positive whole number, got {value!r}; "
                                  "copy the model folder again")
    raise LLMEncoderError("config.json has no hidden_size: not a causal-LM folder (use e.g. Qwen2.5-7B-Instruct)")


def check_model_folder(folder: Path, expected_dim: int | None = None) -> int:
    """The folder's hidden size; raises if it is not a model folder or the size is not ``expected_dim``."""
    size = hidden_size(read_config(folder))
    if expected_dim and size != expected_dim:
        raise LLMEncoderError(f"{Path(folder).name} has hidden size {size}, but the adapter expects embeddings of "
                              f"size {expected_dim} (the published adapters: {REFERENCE_EMBED_DIM} = Qwen2.5-7B-Instruct)")
    return size


@contextlib.contextmanager
def _offline():
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    with _offline():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE.read_text(encoding="utf-8")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def default_device_dtype() -> tuple[torch.device, torch.dtype]:
    """Kept for older callers: the device, and bf16 on CUDA / fp32 on CPU. The encoder itself takes
    its dtype from the recipe (:func:`~.recipe.compute_dtype`)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def load_model(folder: Path, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    with _offline():
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    return model.to(device).eval()


# --- encoding ---------------------------------------------------------------------------------
def chat_texts(tokenizer, prompts: Sequence[str]) -> list[str]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def tokenize(tokenizer, prompts: Sequence[str]):
    """Chat-wrapped prompts → right-padded ``input_ids`` / ``attention_mask`` (no extra special tokens)."""
    return tokenizer(chat_texts(tokenizer, prompts), return_tensors="pt", padding=True, add_special_tokens=False)


def sum_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Kept for older callers: ``[B, L, H]`` → ``[B, H]`` masked sum in fp32 (not the published recipe)."""
    return (hidden.float() * attention_mask[..., None].to(torch.float32)).sum(dim=1)


class ProfileEncoder:
    """A loaded tokenizer + causal LM; use as a context manager so the model is freed afterwards.

    ``recipe`` decides pooling, compute dtype and template notation (default: the published recipe,
    docs/profiles.md). ``dtype`` overrides the recipe's compute dtype (older callers); leave it None.
    """

    def __init__(self, folder: Path, template: str | None = None, expected_dim: int | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None,
                 recipe: EncodingRecipe = PUBLISHED_RECIPE) -> None:
        self.folder = Path(folder)
        self.hidden_size = check_model_folder(self.folder, expected_dim)
        self.template = template if template is not None else load_template()
        check_template(self.template)
        self.recipe = recipe
        self.device = device or default_device_dtype()[0]
        self.dtype = dtype or compute_dtype(self.folder, recipe)
        self.tokenizer = load_tokenizer(self.folder)
        self.model = load_model(self.folder, self.device, self.dtype)

    def describe_recipe(self) -> str:
        """The recipe as run (with the actual compute dtype), for summaries."""
        return self.recipe.describe(self.dtype)

    def __enter__(self) -> "ProfileEncoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def encode_prompts(self, prompts: Sequence[str], batch_size: int = 4,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        if self.model is None:
            raise LLMEncoderError("the encoder was closed")
        out = []
        for start in range(0, len(prompts), batch_size):
            batch = tokenize(self.tokenizer, prompts[start:start + batch_size])
            ids = batch["input_ids"].to(self.device)
            mask = batch["attention_mask"].to(self.device)
            result = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False,
                                logits_to_keep=1)
            hidden = result.hidden_states[-1]
            if hidden.shape[-1] != self.hidden_size:
                raise LLMEncoderError(f"model returned hidden size {hidden.shape[-1]}, config says {self.hidden_size}")
            out.append(pool(hidden, mask, self.recipe.pooling).cpu())
            if progress is not None:
                progress(min(start + batch_size, len(prompts)), len(prompts))
        return torch.cat(out)

    def encode(self, profiles: Sequence[StructuredProfile], batch_size: int = 4,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Profiles (with forbidden categories) → ``[P, hidden]`` float32 on CPU, by ``self.recipe``."""
        return self.encode_prompts([self.prompt(p) for p in profiles], batch_size, progress)

    def prompt(self, profile: StructuredProfile) -> str:
        """The filled template for one profile (before the chat template)."""
        return fill_template(self.template, profile, self.recipe)

    @torch.inference_mode()
    def generate(self, prompt: str, max_new_tokens: int = 128) -> str:
        """Greedy answer to one chat prompt (the LLM category path)."""
        batch = tokenize(self.tokenizer, [prompt])
        ids = batch["input_ids"].to(self.device)
        output = self.model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(self.device),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
