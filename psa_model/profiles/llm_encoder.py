"""LLM profile encoder (docs/reference-parity.md): profile → filled template → chat template → causal LM →
sum of the last hidden states over non-padding tokens.

Any local Hugging Face causal-LM folder works (default expectation: Qwen2.5-7B-Instruct, hidden
size 3584). Loading is strictly offline (``local_files_only=True`` and ``HF_HUB_OFFLINE`` set
while loading). Batches are padded on the *right*: with causal attention the real tokens then
see exactly what they see unpadded and keep positions 0..L-1, so a batched result equals the
one-by-one result. bf16 on CUDA, fp32 on CPU; pooling is summed in fp32.
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
from .profile import ProfileError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = TEMPLATES_DIR / "profile_prompt.txt"
FALLBACK_CHAT_TEMPLATE = TEMPLATES_DIR / "qwen25_chat_template.jinja"
PLACEHOLDERS = ("<<AGE>>", "<<AGE_GROUP>>", "<<GENDER>>", "<<RELIGION>>", "<<MENTAL>>", "<<PHYSICAL>>",
                "<<BANNED>>", "<<ALLOWED>>")
UNKNOWN = "unknown"


class LLMEncoderError(ProfileError):
    """The LLM folder or template cannot be used."""


# --- template ---------------------------------------------------------------------------------
def load_template(path: Path | None = None) -> str:
    path = Path(path) if path is not None else DEFAULT_TEMPLATE
    if not path.is_file():
        raise LLMEncoderError(f"profile template file not found: {path}")
    text = path.read_text(encoding="utf-8")
    check_template(text, path.name)
    return text


def check_template(text: str, source: str = "template") -> None:
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise LLMEncoderError(f"{source} is missing the placeholders {missing}; a profile template must contain "
                              f"all of {list(PLACEHOLDERS)}")


def _categories_text(categories) -> str:
    if categories is None:
        return UNKNOWN
    return ", ".join(categories) if categories else "none"


def fill_template(template: str, profile: StructuredProfile) -> str:
    check_template(template)
    if profile.forbidden is None:
        raise LLMEncoderError("the profile has no forbidden categories yet: give them, or derive them with the "
                              "rule policy or an LLM before encoding")
    values = {
        "<<AGE>>": str(profile.age) if profile.age is not None else UNKNOWN,
        "<<AGE_GROUP>>": profile.age_group or UNKNOWN,
        "<<GENDER>>": profile.gender or UNKNOWN,
        "<<RELIGION>>": profile.religion or UNKNOWN,
        "<<MENTAL>>": profile.mental_condition or UNKNOWN,
        "<<PHYSICAL>>": profile.physical_condition or UNKNOWN,
        "<<BANNED>>": _categories_text(profile.forbidden),
        "<<ALLOWED>>": _categories_text(profile.allowed),
    }
    text = template
    for key, value in values.items():  # <<AGE>> before <<AGE_GROUP>> is safe: the names differ after "AGE"
        text = text.replace(key, value)
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
    return json.loads(config.read_text())


def hidden_size(config: dict) -> int:
    for source in (config, config.get("text_config") or {}):
        if "hidden_size" in source:
            return int(source["hidden_size"])
    raise LLMEncoderError("config.json has no hidden_size")


def check_model_folder(folder: Path, expected_dim: int | None = None) -> int:
    """The folder's hidden size; raises if it is not a model folder or the size is not ``expected_dim``."""
    size = hidden_size(read_config(folder))
    if expected_dim and size != expected_dim:
        raise LLMEncoderError(f"{Path(folder).name} has hidden size {size}, but the adapter expects embeddings of "
                              f"size {expected_dim} (the published adapters: 3584 = Qwen2.5-7B-Instruct)")
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
    """``[B, L, H]`` → ``[B, H]``: sum over tokens whose mask is 1, in fp32."""
    return (hidden.float() * attention_mask[..., None].to(torch.float32)).sum(dim=1)


class ProfileEncoder:
    """A loaded tokenizer + causal LM; use as a context manager so the model is freed afterwards."""

    def __init__(self, folder: Path, template: str | None = None, expected_dim: int | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        self.folder = Path(folder)
        self.hidden_size = check_model_folder(self.folder, expected_dim)
        self.template = template if template is not None else load_template()
        check_template(self.template)
        d_device, d_dtype = default_device_dtype()
        self.device = device or d_device
        self.dtype = dtype or (d_dtype if self.device.type == "cuda" else torch.float32)
        self.tokenizer = load_tokenizer(self.folder)
        self.model = load_model(self.folder, self.device, self.dtype)

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
            out.append(sum_pool(hidden, mask).cpu())
            if progress is not None:
                progress(min(start + batch_size, len(prompts)), len(prompts))
        return torch.cat(out)

    def encode(self, profiles: Sequence[StructuredProfile], batch_size: int = 4,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Profiles (with forbidden categories) → ``[P, hidden]`` float32 on CPU."""
        return self.encode_prompts([fill_template(self.template, p) for p in profiles], batch_size, progress)

    @torch.inference_mode()
    def generate(self, prompt: str, max_new_tokens: int = 128) -> str:
        """Greedy answer to one chat prompt (the LLM category path)."""
        batch = tokenize(self.tokenizer, [prompt])
        ids = batch["input_ids"].to(self.device)
        output = self.model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(self.device),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
