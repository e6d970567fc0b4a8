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

from ..adapter.modules import REFERENCE_EMBED_DIM
from .chat_template import render_chat
from .recipe import PUBLISHED_RECIPE, UNKNOWN, EncodingRecipe, categories_text, compute_dtype, pool, template_values  # noqa: F401 - re-exported (older callers import them from here)
from .schema import StructuredProfile
from .vocabulary import MAX_JSON_BYTES, ProfileError

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
MAX_HIDDEN_SIZE = 1 << 20
CONFIG_MAX_BYTES = 4 << 20  # a real config.json is a few KiB
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
_CODE_FILES = ("config.json", "tokenizer_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")
_REFETCH = "copy the model folder again from its Hugging Face download"


def _read_json(folder: Path, name: str) -> object:
    path = folder / name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LLMEncoderError(f"{folder.name}/{name} cannot be read ({exc.__class__.__name__}); {_REFETCH}") from None
    if size > CONFIG_MAX_BYTES:
        raise LLMEncoderError(f"{folder.name}/{name} is over {CONFIG_MAX_BYTES >> 20} MiB, which no model's "
                              f"{name} is; refusing to parse it ({_REFETCH})")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LLMEncoderError(f"{folder.name}/{name} cannot be read ({exc.__class__.__name__}); {_REFETCH}") from None


def read_config(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise LLMEncoderError(f"LLM folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise LLMEncoderError(f"{folder.name}: no config.json; expected a Hugging Face model folder "
                              "(config.json, tokenizer files, *.safetensors)")
    data = _read_json(folder, "config.json")
    if not isinstance(data, dict):
        raise LLMEncoderError(f"{folder.name}/config.json is not a JSON object; copy the model folder again")
    return data


def check_no_custom_code(folder: Path) -> None:
    """Refuse folders whose config asks for Python code shipped in the folder (``auto_map``).

    The pack never passes ``trust_remote_code``: such a model cannot be used, whatever its files say."""
    for name in _CODE_FILES:
        if (folder / name).is_file():
            data = _read_json(folder, name)
            if isinstance(data, dict) and "auto_map" in data:
                raise LLMEncoderError(f"{folder.name}/{name} names Python code shipped in the folder ('auto_map'); "
                                      "the pack never runs code from a model folder. Use a model that transformers "
                                      "supports itself (e.g. Qwen2.5-7B-Instruct)")


def check_weights(folder: Path) -> None:
    """The folder must hold ``.safetensors`` weights: pickled weights (``*.bin``, ``*.pt``) are never loaded."""
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f" (it has {', '.join(pickled[:3])}: pickled weights, which the pack does not load)" if pickled else ""
        raise LLMEncoderError(f"{folder.name}: no *.safetensors weights{found}; download the model's .safetensors "
                              "files (every current Hugging Face model has them)")


def chat_template_source(folder: Path) -> str:
    """The file the folder's chat template comes from, as ``folder/name`` (for messages)."""
    folder = Path(folder)
    for name in _TEMPLATE_FILES:
        if (folder / name).is_file():
            return f"{folder.name}/{name}"
    return f"{folder.name} (the project's Qwen2.5 chat template)"


def hidden_size(config: dict) -> int:
    text_config = config.get("text_config")
    for source in (config, text_config if isinstance(text_config, dict) else {}):
        if "hidden_size" in source:
            value = source["hidden_size"]
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_HIDDEN_SIZE:
                return value
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
            raise LLMEncoderError(f"config.json: hidden_size must be a whole number from 1 to {MAX_HIDDEN_SIZE}, got "
                                  f"{shown}; copy the model folder again")
    raise LLMEncoderError("config.json has no hidden_size: not a causal-LM folder (use e.g. Qwen2.5-7B-Instruct)")


def check_model_folder(folder: Path, expected_dim: int | None = None) -> int:
    """The folder's hidden size; raises if it is not a model folder or the size is not ``expected_dim``."""
    try:
        size = hidden_size(read_config(folder))
    except LLMEncoderError as exc:
        text = str(exc)
        raise LLMEncoderError(text if text.startswith(Path(folder).name) else f"{Path(folder).name}/{text}") from None
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


def _loading_error(folder: Path, what: str, exc: BaseException) -> LLMEncoderError:
    # The library's own text is not passed on: it may advise unsafe loading (trust_remote_code, weights_only).
    return LLMEncoderError(f"{Path(folder).name}: the {what} cannot be loaded ({exc.__class__.__name__}); {_REFETCH} "
                           "(config.json, tokenizer.json, tokenizer_config.json, *.safetensors)")


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy (transformers): loaded only when used

    folder = Path(folder)
    check_no_custom_code(folder)
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise LLMEncoderError(f"{folder.name}: no tokenizer files (one of {list(_TOKENIZER_FILES)}); {_REFETCH}")
    try:
        with _offline():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure of a downloaded folder is the folder's
        raise _loading_error(folder, "tokenizer", exc) from None
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE.read_text(encoding="utf-8")
        tokenizer.psa_template_source = f"{FALLBACK_CHAT_TEMPLATE.name} (the project's Qwen2.5 chat template)"
    else:
        tokenizer.psa_template_source = chat_template_source(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.psa_folder = folder.name
    return tokenizer


def default_device_dtype() -> tuple[torch.device, torch.dtype]:
    """Kept for older callers: the device, and bf16 on CUDA / fp32 on CPU. The encoder itself takes
    its dtype from the recipe (:func:`~.recipe.compute_dtype`)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def load_model(folder: Path, device: torch.device, dtype: torch.dtype):
    """The causal LM from ``.safetensors`` only, without code from the folder."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - heavy (transformers): loaded only when used

    folder = Path(folder)
    check_no_custom_code(folder)
    check_weights(folder)
    try:
        with _offline():
            model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype,
                                                         use_safetensors=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure of a downloaded folder is the folder's
        raise _loading_error(folder, "model", exc) from None
    return model.to(device).eval()


# --- encoding ---------------------------------------------------------------------------------
def chat_texts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Each prompt as the user turn of the tokenizer's chat template, rendered with a time and size limit
    (:mod:`.chat_template`); the text equals ``apply_chat_template(..., tokenize=False)``'s."""
    try:
        template = tokenizer.get_chat_template()
    except (ValueError, TypeError) as exc:
        raise LLMEncoderError(f"{getattr(tokenizer, 'psa_template_source', 'the tokenizer')}: no usable chat template "
                              f"({exc.__class__.__name__}); delete it so the project's Qwen2.5 template is used") from None
    source = getattr(tokenizer, "psa_template_source", "the tokenizer's chat template")
    return render_chat(template, [[{"role": "user", "content": p}] for p in prompts], dict(tokenizer.special_tokens_map),
                       source)


def tokenize(tokenizer, prompts: Sequence[str], chat: Sequence[str] | None = None):
    """Chat-wrapped prompts → right-padded ``input_ids`` / ``attention_mask`` (no extra special tokens).

    ``chat``: the prompts' chat texts when already rendered (:func:`chat_texts`)."""
    texts = list(chat) if chat is not None else chat_texts(tokenizer, prompts)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    if batch["attention_mask"].sum(dim=1).min() == 0:
        raise LLMEncoderError(f"{getattr(tokenizer, 'psa_folder', 'the LLM folder')}: the tokenizer turned a prompt "
                              f"into no tokens; its files are missing or broken ({_REFETCH})")
    return batch


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
        chat = chat_texts(self.tokenizer, prompts)  # one renderer process for all prompts
        for start in range(0, len(prompts), batch_size):
            batch = tokenize(self.tokenizer, prompts[start:start + batch_size], chat[start:start + batch_size])
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
