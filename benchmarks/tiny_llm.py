"""A tiny random Qwen2 causal LM saved with the real Qwen2.5 tokenizer shipped in ComfyUI.

Used by the profile-encoder benchmark (`benchmarks/encoder.py`) and the LLM encoder tests; it needs
no download (the tokenizer files come with ComfyUI).
"""
from __future__ import annotations

from pathlib import Path

from training.comfy_host import comfyui_path

HIDDEN = 32


def comfy_tokenizer_dir() -> Path:
    return comfyui_path() / "comfy" / "text_encoders" / "qwen25_tokenizer"


def build_tiny_qwen2(folder: Path, keep_chat_template: bool = True, seed: int = 0, dtype=None) -> Path:
    """Saved in ``dtype`` (default float32); config.json then names that dtype, like Qwen2.5's bfloat16."""
    import torch  # noqa: PLC0415 - heavy (torch): keeps this module light to import
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415 - heavy (transformers): loaded only when used

    tokenizer = AutoTokenizer.from_pretrained(str(comfy_tokenizer_dir()), local_files_only=True)
    if not keep_chat_template:
        tokenizer.chat_template = None
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    if not keep_chat_template:
        for name in ("chat_template.jinja", "chat_template.json"):
            (folder / name).unlink(missing_ok=True)
    return folder
