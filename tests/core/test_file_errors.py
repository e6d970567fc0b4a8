"""Loader errors a user can act on, strict profile files, and confinement (docs/security.md, "Errors" and "Confinement")."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from psa_model.formats.adapter_file import AdapterFormatError, load_adapter
from psa_model.profiles.profile import PROFILE_JSON_KEYS, load_profile_file
from psa_model.profiles.vocabulary import ProfileError
from psa_model.profiles.schema import is_attribute_profile_file, load_structured_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def profiles(tmp_path) -> Path:
    folder = tmp_path / "psa_profiles"
    folder.mkdir()
    np.save(folder / "u.npy", np.arange(8, dtype=np.float32))
    return folder


def _write(folder: Path, name: str, spec) -> Path:
    path = folder / name
    path.write_text(json.dumps(spec))
    return path


# -- strict profile files ------------------------------------------------------------------------
def test_forbidden_as_a_string_is_refused(profiles):
    path = _write(profiles, "p.json", {"embedding": "u.npy", "forbidden": "Hate"})
    with pytest.raises(ProfileError, match=r"p\.json: 'forbidden' must be a list of category names"):
        load_profile_file(path)


def test_attribute_profile_forbidden_as_a_string_is_refused(profiles):
    path = _write(profiles, "a.json", {"age": 30, "forbidden": "Hate"})
    with pytest.raises(ProfileError, match=r"a\.json: 'forbidden' must be a list"):
        load_structured_profile(path)


def test_unknown_key_lists_the_accepted_keys(profiles):
    path = _write(profiles, "p.json", {"embedding": "u.npy", "forbiden": ["Hate"]})
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert "forbiden" in str(info.value)
    assert all(key in str(info.value) for key in PROFILE_JSON_KEYS)


def test_attribute_profile_unknown_key_lists_the_accepted_keys(profiles):
    path = _write(profiles, "a.json", {"age": 30, "hobby": "chess"})
    with pytest.raises(ProfileError, match=r"'hobby'.*accepted keys.*'gender'"):
        load_structured_profile(path)


@pytest.mark.parametrize("key,value", [("name", 5), ("embedding", ["u.npy"]), ("allowed", [1, 2]),
                                       ("note", {"a": 1})])
def test_wrong_types_name_the_key(profiles, key, value):
    spec = {"embedding": "u.npy", key: value}
    with pytest.raises(ProfileError, match=rf"p\.json: '{key}'"):
        load_profile_file(_write(profiles, "p.json", spec))


@pytest.mark.parametrize("key,value", [("age", "thirty"), ("age", True), ("age", 30.5), ("gender", 1),
                                       ("religion", ["Islam"]), ("allowed", "Hate, Violence")])
def test_attribute_wrong_types(profiles, key, value):
    with pytest.raises(ProfileError, match=rf"a\.json: '{key}' must be"):
        load_structured_profile(_write(profiles, "a.json", {key: value}))


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[" * 100_000, b"{\"age\": 1e999999}", b"",
                                     b"null", b"\"text\""])
def test_damaged_json_is_a_profile_error_naming_the_file(profiles, content):
    path = profiles / "bad.json"
    path.write_bytes(content)
    for loader in (load_profile_file, load_structured_profile):
        with pytest.raises(ProfileError, match=r"bad\.json"):
            loader(path)
    assert is_attribute_profile_file(path)  # listed, so that choosing it shows the error


def test_oversized_json_is_refused_without_parsing(profiles):
    path = profiles / "huge.json"
    path.write_bytes(b" " * (2 << 20) + b"{}")
    with pytest.raises(ProfileError, match=r"huge\.json: .*too large"):
        load_structured_profile(path)


def test_embedding_profile_is_not_listed_as_attribute_profile(profiles):
    assert not is_attribute_profile_file(_write(profiles, "p.json", {"embedding": "u.npy"}))


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.zeros((2, 3), np.float32), np.zeros(0, np.float32),
                                   np.array(1.0, np.float32), np.full(4, 1e300)])
def test_bad_embedding_arrays(profiles, array):
    np.save(profiles / "e.npy", array)
    with pytest.raises(ProfileError, match=r"e\.npy|e"):
        load_profile_file(profiles / "e.npy")


def test_pickled_npy_is_refused(profiles):
    np.save(profiles / "o.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ProfileError, match=r"o\.npy: not a plain numeric \.npy file \(it holds pickled objects\)"):
        load_profile_file(profiles / "o.npy")


def test_damaged_safetensors_embedding(profiles):
    (profiles / "e.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ProfileError, match=r"e\.safetensors: not a readable \.safetensors file"):
        load_profile_file(profiles / "e.safetensors")


# -- confinement ---------------------------------------------------------------------------------
def test_escapes_are_refused_with_one_message_whether_or_not_the_target_exists(tmp_path, profiles):
    outside = tmp_path / "secret.npy"
    np.save(outside, np.ones(8, np.float32))
    messages = {}
    for label, ref in {"exists_rel": "../secret.npy", "missing_rel": "../nothing.npy",
                       "exists_abs": str(outside), "missing_abs": str(tmp_path / "nothing.npy")}.items():
        with pytest.raises(ProfileError) as info:
            load_profile_file(_write(profiles, "p.json", {"embedding": ref}), [profiles])
        messages[label] = str(info.value).replace(repr(ref), "REF")
    assert len(set(messages.values())) == 1, messages
    assert "outside the model folders" in messages["exists_rel"]
    assert "not found" not in messages["exists_rel"]


def test_a_link_inside_the_folder_pointing_outside_is_refused(tmp_path, profiles):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    np.save(outside / "x.npy", np.ones(8, np.float32))
    os.symlink(outside, profiles / "linked")
    with pytest.raises(ProfileError, match="outside the model folders"):
        load_profile_file(_write(profiles, "p.json", {"embedding": "linked/x.npy"}), [profiles])


def test_references_inside_any_registered_folder_load(tmp_path, profiles):
    second = tmp_path / "more_profiles"
    second.mkdir()
    np.save(second / "v.npy", np.full(8, 2.0, np.float32))
    (profiles / "sub").mkdir()
    np.save(profiles / "sub" / "w.npy", np.full(8, 3.0, np.float32))
    roots = [profiles, second]
    assert load_profile_file(_write(profiles, "a.json", {"embedding": "sub/w.npy"}), roots).embeddings[0, 0] == 3.0
    assert load_profile_file(_write(profiles, "b.json", {"embedding": "../more_profiles/v.npy"}),
                             roots).embeddings[0, 0] == 2.0
    with pytest.raises(ProfileError, match="outside"):  # same file, but that folder is not registered
        load_profile_file(_write(profiles, "b.json", {"embedding": "../more_profiles/v.npy"}), [profiles])


# -- adapters ------------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "psa_adapter.bin"
    buf = io.BytesIO()
    torch.save({"psa_adapter": _Evil(), "user_proj": {}}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(AdapterFormatError) as info:
        load_adapter(path)
    text = str(info.value)
    assert text.startswith("psa_adapter.bin: not a plain tensor pickle")
    assert "weights_only" not in text and "False" not in text


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "])
def test_damaged_safetensors_adapter(tmp_path, content):
    path = tmp_path / "a.safetensors"
    path.write_bytes(content)
    with pytest.raises(AdapterFormatError, match=r"^a\.safetensors: "):
        load_adapter(path)


def test_inconsistent_native_adapter_names_the_file(tmp_path):
    path = tmp_path / "n.safetensors"
    save_file({"user_proj.proj.weight": torch.zeros(3, 2)}, str(path),
              metadata={"psa_format": "psa-native", "psa_format_version": "1", "arch": "sd15"})
    with pytest.raises(AdapterFormatError, match=r"^n\.safetensors: "):
        load_adapter(path)


def test_wrong_group_types_in_a_pickle(tmp_path):
    path = tmp_path / "g.bin"
    torch.save({"psa_adapter": {"x.to_k_user.0.weight": torch.zeros(1)}, "user_proj": 3}, str(path))
    with pytest.raises(AdapterFormatError, match=r"g\.bin: 'user_proj' must map names to tensors"):
        load_adapter(path)


# -- converter CLI -------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"garbage", None])
def test_converter_prints_one_error_line(tmp_path, content):
    src = tmp_path / "in.safetensors"
    if content is not None:
        src.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "psa_model.formats.convert", str(src), str(tmp_path / "o.bin")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.strip().splitlines() if "error: " in line]  # argparse may add usage
    assert len(errors) == 1 and "in.safetensors" in errors[0], proc.stderr
    assert not (tmp_path / "o.bin").exists()


@pytest.mark.parametrize("spec,expect", [({"age": 200}, "age must be a whole number"),
                                         ({"gender": "robot"}, "unknown gender 'robot'"),
                                         ({}, "empty profile"),
                                         ({"forbidden": ["Hate"], "allowed": ["Hate"]}, "both forbidden and allowed")])
def test_attribute_value_errors_name_the_file(profiles, spec, expect):
    with pytest.raises(ProfileError, match=rf"^a\.json: .*{expect}"):
        load_structured_profile(_write(profiles, "a.json", spec))


# -- JSON details a reviewer could be misled by ------------------------------------------------------
def test_a_key_given_twice_is_refused(profiles):
    (profiles / "twice.json").write_text('{"embedding": "u.npy", "forbidden": ["Hate"], "forbidden": []}')
    with pytest.raises(ProfileError, match=r"twice\.json: cannot read profile JSON \(the key 'forbidden' appears twice"):
        load_profile_file(profiles / "twice.json")
    (profiles / "a_twice.json").write_text('{"age": 30, "age": 8}')
    with pytest.raises(ProfileError, match=r"a_twice\.json: .*the key 'age' appears twice"):
        load_structured_profile(profiles / "a_twice.json")


def test_a_five_thousand_digit_age_is_refused_in_our_words(profiles):
    (profiles / "old.json").write_text('{"age": ' + "9" * 5000 + "}")
    with pytest.raises(ProfileError) as info:
        load_structured_profile(profiles / "old.json")
    assert "old.json: cannot read profile JSON (a number with 5000 digits)" in str(info.value)
    assert "set_int_max_str_digits" not in str(info.value)


def test_an_unknown_key_with_a_number_is_named_as_unknown(profiles):
    path = _write(profiles, "num.json", {"age": 30, "shoe_size": 44})
    with pytest.raises(ProfileError, match=r"num\.json: unknown profile key 'shoe_size'; accepted keys"):
        load_structured_profile(path)
