"""Property-based fuzzing of every file loader: any bytes load or raise our own error, whose text
never passes on a library's advice to load unsafely (docs/security.md, "Errors").

Inputs are random bytes plus mutations of valid files (so the fuzzer reaches past the first
header check): adapters, profiles, attribute profiles, the embedding cache, LLM folders'
config.json / tokenizer_config.json, and the trainer's inputs (embeddings, metadata.jsonl,
resume state). Example counts are small to keep the suite fast.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from psa_model.formats.adapter_file import AdapterFormatError, load_adapter  # noqa: E402
from psa_model.profiles.embedding_cache import EmbeddingCache  # noqa: E402
from psa_model.profiles.llm_encoder import LLMEncoderError, check_model_folder, check_no_custom_code  # noqa: E402
from psa_model.profiles.profile import PSAProfile, load_profile_file  # noqa: E402
from psa_model.profiles.vocabulary import ProfileError  # noqa: E402
from psa_model.profiles.schema import (StructuredProfile, is_attribute_profile_file,  # noqa: E402
                                      load_structured_profile)
from support.hostile_world import UNSAFE_ADVICE  # noqa: E402
from training.checkpoint import ResumeError, load_checkpoint, rng_states  # noqa: E402
from training.data import DataValidationError, _read_metadata, load_embedding  # noqa: E402

MESSAGES: list[str] = []  # every error text the fuzzers produced, checked as they arrive


def _ours(exc: BaseException) -> None:
    """An error of ours whose text gives no advice to disable a safety check."""
    text = str(exc)
    MESSAGES.append(text)
    assert not any(word in text for word in UNSAFE_ADVICE), text


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32))
    return buf.getvalue()


def _tiny_reference_bin() -> bytes:
    buf = io.BytesIO()
    torch.save({"psa_adapter": {"0.to_k_user.0.weight": torch.zeros(2, 2)},
                "user_proj": {"proj.weight": torch.zeros(4, 3)}}, buf)
    return buf.getvalue()


SEEDS = {
    ".npy": _npy_bytes(),
    ".safetensors": safetensors_bytes({"embedding": torch.arange(6, dtype=torch.float32)},
                                      metadata={"psa_format": "psa-native"}),
    ".json": json.dumps({"embedding": "u.npy", "name": "x", "forbidden": ["Hate"]}).encode(),
    ".bin": _tiny_reference_bin(),
}


def _mutated(seed: bytes):
    """The seed with a few bytes overwritten, a cut, or junk appended."""
    edits = st.lists(st.tuples(st.integers(0, max(len(seed) - 1, 0)), st.integers(0, 255)), max_size=6)
    return st.one_of(
        st.binary(max_size=512),
        st.builds(lambda e: bytes(_apply(seed, e)), edits),
        st.builds(lambda n: seed[:n], st.integers(0, len(seed))),
        st.builds(lambda junk: seed + junk, st.binary(max_size=64)),
    )


def _apply(seed: bytes, edits) -> bytearray:
    out = bytearray(seed)
    for index, value in edits:
        if out:
            out[index % len(out)] = value
    return out


@contextlib.contextmanager
def _file(data: bytes, suffix: str):
    """``data`` as ``f{suffix}`` in a fresh folder that also holds a valid ``u.npy``; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="psa-fuzz-"))
    try:
        np.save(folder / "u.npy", np.arange(6, dtype=np.float32))
        path = folder / f"f{suffix}"
        path.write_bytes(data)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".json"])
def test_profile_loader_never_raises_foreign_errors(suffix):
    @FUZZ
    @given(_mutated(SEEDS[suffix]))
    def check(data):
        with _file(data, suffix) as path:
            try:
                result = load_profile_file(path, [path.parent])
            except ProfileError as exc:
                return _ours(exc)
        assert isinstance(result, PSAProfile) and torch.isfinite(result.embeddings).all()

    check()


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_adapter_loader_never_raises_foreign_errors(suffix):
    @FUZZ
    @given(_mutated(SEEDS[suffix]))
    def check(data):
        with _file(data, suffix) as path, pytest.raises(AdapterFormatError) as info:
            load_adapter(path)  # no fuzzed file is a complete 16-layer adapter
        _ours(info.value)

    check()


def test_attribute_profile_loader_never_raises_foreign_errors():
    seed = json.dumps({"age": 30, "gender": "female", "forbidden": ["Hate", "Violence"]}).encode()
    hostile = st.sampled_from([b'{"age": 30, "age": 5}', b'{"age": ' + b"9" * 5000 + b"}", b'{"hobby": 7}',
                               b'{"age": 1e999}', b'{"gender": "female", "gender": "male"}'])

    @FUZZ
    @given(st.one_of(hostile, _mutated(seed), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["age", "gender", "religion", "forbidden", "allowed", "name", "x"]), inner, max_size=4),
        max_leaves=8).map(lambda v: json.dumps(v).encode())))
    def check(data):
        with _file(data, ".json") as path:
            assert isinstance(is_attribute_profile_file(path), bool)  # listing never raises
            try:
                result = load_structured_profile(path)
            except ProfileError as exc:
                return _ours(exc)
        assert isinstance(result, StructuredProfile)

    check()


def test_embedding_cache_treats_any_bytes_as_a_hit_or_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)

    @FUZZ
    @given(_mutated(SEEDS[".safetensors"]))
    def check(data):
        cache.path("k").write_bytes(data)
        result = cache.get("k")
        assert result is None or (result.ndim == 1 and torch.isfinite(result).all())

    check()


CONFIG_SEED = json.dumps({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "model_type": "qwen2",
                          "text_config": {"hidden_size": 32}}).encode()


def test_llm_folder_configs_never_raise_foreign_errors():
    hostile = st.sampled_from([b'{"hidden_size": 32, "auto_map": {"AutoModel": "x.Y"}}', b"[" * 50_000,
                               b'{"hidden_size": ' + b"9" * 5000 + b"}", b'{"hidden_size": 1e999}', b"\xff\xfe{}"])

    @FUZZ
    @given(st.one_of(hostile, _mutated(CONFIG_SEED)), st.sampled_from(["config.json", "tokenizer_config.json"]))
    def check(data, name):
        folder = Path(tempfile.mkdtemp(prefix="psa-fuzz-llm-"))
        try:
            (folder / "config.json").write_bytes(CONFIG_SEED)
            (folder / name).write_bytes(data)
            try:
                assert check_model_folder(folder) > 0
                check_no_custom_code(folder)
            except LLMEncoderError as exc:
                assert folder.name in str(exc)
                return _ours(exc)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    check()


def test_trainer_embeddings_and_metadata_never_raise_foreign_errors():
    record = json.dumps({"chosen": "a.png", "rejected": "b.png", "caption": "x", "user_data": {"User_ID": 3}})

    @FUZZ
    @given(_mutated(SEEDS[".npy"]), _mutated(record.encode()))
    def check(npy, line):
        with _file(npy, ".npy") as path:
            try:
                assert load_embedding(path).ndim == 1
            except DataValidationError as exc:
                _ours(exc)
            (path.parent / "metadata.jsonl").write_bytes(line + b"\n" + record.encode())
            try:
                assert _read_metadata(path.parent)
            except (DataValidationError, UnicodeDecodeError) as exc:
                if isinstance(exc, DataValidationError):
                    _ours(exc)

    check()


def _state_bytes(extra) -> bytes:
    buf = io.BytesIO()
    torch.save({"run_fingerprint": "f", "rng": rng_states(torch.Generator()), "extra": extra}, buf)
    return buf.getvalue()


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_resume_state_is_read_without_running_code(tmp_path, capsys):
    """A state.pt is data: our own loads, a pickled object (code) or damaged bytes are refused."""
    folder = tmp_path / "step_1"
    folder.mkdir()
    (folder / "adapter.safetensors").write_bytes(b"")
    (folder / "state.pt").write_bytes(_state_bytes([1, 2.0, "x"]))
    assert load_checkpoint(folder, "f")[1]["extra"] == [1, 2.0, "x"]

    @FUZZ
    @given(st.one_of(st.just(_state_bytes(_Payload())), _mutated(_state_bytes(None))))
    def check(data):
        (folder / "state.pt").write_bytes(data)
        try:
            load_checkpoint(folder, "f")
        except ResumeError as exc:
            _ours(exc)

    check()
    assert "code ran" not in capsys.readouterr().out


def test_the_fuzzers_produced_errors_to_check():
    assert len(MESSAGES) >= 100  # the grep above ran over a real corpus (this file's tests, in order)
