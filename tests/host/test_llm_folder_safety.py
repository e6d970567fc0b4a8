"""Hostile LLM folders: templates that never end or grow without bound, pickles, auto_map, broken config
and tokenizer files. Each must be refused by the pack's own error naming the file (docs/security.md,
"Templates" and "Errors"), never by a library's advice to load unsafely, and no code may run.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from psa_model.profiles import chat_template, llm_encoder
from psa_model.profiles.llm_encoder import ProfileEncoder
from psa_model.profiles.vocabulary import ProfileError
from psa_model.profiles.schema import StructuredProfile
from benchmarks.tiny_llm import build_tiny_qwen2
from support.hostile_world import HOSTILE_LLM, LOOP_TEMPLATE, UNSAFE_ADVICE, build_hostile_llm_folders

PROFILE = StructuredProfile.create(age=30, forbidden=["Hate"])
LIMIT_S = 3.0


@pytest.fixture(scope="module")
def llm_root(tmp_path_factory, comfy_host) -> Path:
    root = tmp_path_factory.mktemp("hostile_llm")
    good = build_tiny_qwen2(root / "good")
    build_hostile_llm_folders(root, good)
    return root


@pytest.mark.parametrize("name", list(HOSTILE_LLM))
def test_hostile_llm_folder_is_refused_with_our_message(name, llm_root, monkeypatch):
    monkeypatch.setenv(chat_template.ENV_SECONDS, str(LIMIT_S))
    Path("/tmp/psa_pwned").unlink(missing_ok=True)
    started = time.monotonic()
    with pytest.raises(ProfileError) as info:
        with ProfileEncoder(llm_root / name, expected_dim=32) as encoder:
            encoder.encode([PROFILE])
    message = str(info.value)
    assert re.search(HOSTILE_LLM[name][1], message), message
    assert not any(word in message for word in UNSAFE_ADVICE), message
    assert time.monotonic() - started < 60  # a hang would never get here; the limit is LIMIT_S
    assert not Path("/tmp/psa_pwned").exists()


def test_good_folder_renders_what_transformers_renders(llm_root):
    tokenizer = llm_encoder.load_tokenizer(llm_root / "good")
    prompts = ["hello", "a profile: age 30, forbidden ['Hate']"]
    expected = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    assert llm_encoder.chat_texts(tokenizer, prompts) == expected
    assert tokenizer.psa_template_source == "good/chat_template.jinja"


def test_the_limit_counts_the_templates_time_not_the_renderers_start():
    """A loop is refused after the limit (plus the child's start), and the next render works."""
    started = time.monotonic()
    with pytest.raises(chat_template.TemplateRenderError, match=r"m/t\.jinja: rendering did not finish within 1 s"):
        chat_template.render_chat(LOOP_TEMPLATE, [[{"role": "user", "content": "x"}]], {}, "m/t.jinja", seconds=1)
    assert time.monotonic() - started < 60
    assert chat_template.render_chat("{{ messages[0]['content'] }}!", [[{"role": "user", "content": "y"}]], {},
                                     "m/u.jinja", seconds=1) == ["y!"]
