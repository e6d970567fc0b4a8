"""Property-based fuzzing of every file loader (docs/security.md, "Errors"): any bytes load or raise our own error.

Inputs are random bytes plus mutations of valid files (so the fuzzer reaches past the first
header check). Example counts are small to keep the suite fast.
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
from psa_model.profiles.profile import PSAProfile, load_profile_file  # noqa: E402
from psa_model.profiles.vocabulary import ProfileError  # noqa: E402
from psa_model.profiles.schema import (StructuredProfile, is_attribute_profile_file,  # noqa: E402
                                      load_structured_profile)

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
            except ProfileError:
                return
        assert isinstance(result, PSAProfile) and torch.isfinite(result.embeddings).all()

    check()


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_adapter_loader_never_raises_foreign_errors(suffix):
    @FUZZ
    @given(_mutated(SEEDS[suffix]))
    def check(data):
        with _file(data, suffix) as path, pytest.raises(AdapterFormatError):
            load_adapter(path)  # no fuzzed file is a complete 16-layer adapter

    check()


def test_attribute_profile_loader_never_raises_foreign_errors():
    seed = json.dumps({"age": 30, "gender": "female", "forbidden": ["Hate", "Violence"]}).encode()

    @FUZZ
    @given(st.one_of(_mutated(seed), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["age", "gender", "religion", "forbidden", "allowed", "name", "x"]), inner, max_size=4),
        max_leaves=8).map(lambda v: json.dumps(v).encode())))
    def check(data):
        with _file(data, ".json") as path:
            assert isinstance(is_attribute_profile_file(path), bool)  # listing never raises
            try:
                result = load_structured_profile(path)
            except ProfileError:
                return
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
