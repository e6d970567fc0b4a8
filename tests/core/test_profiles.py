"""Profile loading: published embedding files, JSON profiles, Sage users, presets, batches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psa_model.profiles.profile import LEVEL_PRESETS, combine, load_preset, load_profile_file, load_sage_user
from psa_model.profiles.vocabulary import ProfileError


def test_published_embeddings_load(shared_dir):
    profile = load_profile_file(shared_dir / "data" / "sage_embeddings" / "0000002.npy")
    raw = np.load(shared_dir / "data" / "sage_embeddings" / "0000002.npy")
    assert profile.embeddings.shape == (1, 3584)
    assert torch.equal(profile.embeddings[0], torch.from_numpy(raw))


def test_sage_user_has_labels_from_the_table(shared_dir):
    profile = load_sage_user(shared_dir / "data", 2)
    # sage_users.csv row 2: Banned ['Propaganda', 'Self-Harm', 'Sexuality', 'Shocking']
    assert set(profile.labels[0].forbidden) == {"Propaganda", "Self-Harm", "Sexuality", "Shocking"}
    assert set(profile.labels[0].allowed) == {"Harassment", "Hate", "Violence"}


@pytest.mark.parametrize("shape", [(3584,), (1, 1, 3584)])
def test_npy_shapes(tmp_path, shape):
    np.save(tmp_path / "u.npy", np.arange(3584, dtype=np.float32).reshape(shape))
    assert load_profile_file(tmp_path / "u.npy").embeddings[0, 5].item() == 5.0


@pytest.mark.parametrize("array, message", [
    (np.full(8, np.nan, dtype=np.float32), "NaN or Inf"),
    (np.ones((2, 8), dtype=np.float32), "expected one embedding"),
])
def test_bad_embeddings(tmp_path, array, message):
    np.save(tmp_path / "u.npy", array)
    with pytest.raises(ProfileError, match=message):
        load_profile_file(tmp_path / "u.npy")


def test_json_profile_and_batch(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(16, dtype=np.float32))
    (tmp_path / "a.json").write_text(json.dumps({"embedding": "a.npy", "forbidden": ["Violence"], "allowed": ["Hate"]}))
    a = load_profile_file(tmp_path / "a.json")
    assert a.labels[0].forbidden == ("Violence",)
    batch = combine([a, load_profile_file(tmp_path / "a.npy")])
    assert batch.count == 2 and "Violence" in batch.describe()
    (tmp_path / "b.json").write_text(json.dumps({"embedding": "a.npy", "forbidden": ["Gore"]}))
    with pytest.raises(ProfileError, match="unknown categories"):
        load_profile_file(tmp_path / "b.json")


def test_presets_resolve_through_the_sage_folder(tmp_path):
    with pytest.raises(ProfileError, match="unknown PSA preset"):
        load_preset(tmp_path, "level 9")
    preset = next(iter(LEVEL_PRESETS))
    with pytest.raises(ProfileError, match="put 0001001.npy"):
        load_preset(tmp_path, preset)
    (tmp_path / "sage_embeddings").mkdir()
    np.save(tmp_path / "sage_embeddings" / "0001001.npy", np.zeros(8, dtype=np.float32))
    assert load_preset(tmp_path, preset).names() == [preset]


@pytest.mark.parametrize("attributes, message", [
    ({"age": "banana"}, "c.json: age must be a whole number 0–120, got 'banana'"),
    ({"Age": 130}, "c.json: age must be a whole number 0–120, got 130"),
    ({"gender": "robot"}, "c.json: unknown gender 'robot'"),
    ({"age": 12, "age_group": "elderly"}, "c.json: age 12 belongs to age group"),
])
def test_attributes_beside_an_embedding_are_validated(tmp_path, attributes, message):
    np.save(tmp_path / "a.npy", np.ones(16, dtype=np.float32))
    (tmp_path / "c.json").write_text(json.dumps({"embedding": "a.npy", **attributes}))
    with pytest.raises(ProfileError, match=message):
        load_profile_file(tmp_path / "c.json")


def test_valid_attributes_beside_an_embedding_load(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(16, dtype=np.float32))
    (tmp_path / "d.json").write_text(json.dumps({"embedding": "a.npy", "age": 15, "gender": "female",
                                                 "religion": "", "note": "kept"}))
    assert load_profile_file(tmp_path / "d.json").embeddings.shape == (1, 16)
