"""Stated boundaries vs attributes (psa_model/profiles/boundaries.py, training/boundaries.py):
the summary's warning, the legible template fill, and the resampling recipe's pairs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psa_model.profiles.boundaries import adapter_boundary_data, attribute_forbidden
from psa_model.profiles.profile import ProfileLabel, PSAProfile, load_profile_file
from psa_model.profiles.recipe import EncodingRecipe, template_values
from psa_model.profiles.schema import StructuredProfile
from psa_model.profiles.vocabulary import CATEGORIES

# A child with a war history and an intellectual disability: the Sage policy forbids every category.
CHILD = dict(age=10, gender="female", religion="Christianity", mental_condition="war",
             physical_condition="intellectual disability")


def _write_profile(folder, **spec):
    np.save(folder / "e.npy", np.ones(8, np.float32))
    (folder / "p.json").write_text(json.dumps({"embedding": "e.npy", "name": "kid", **spec}))
    return load_profile_file(folder / "p.json")


def test_summary_warns_when_stated_categories_contradict_the_attributes(tmp_path):
    profile = _write_profile(tmp_path, forbidden=["Violence"], **CHILD)
    text = profile.describe()
    assert "WARNING kid" in text
    assert "[Violence]" in text and "[" + ", ".join(CATEGORIES) + "]" in text   # stated and policy sets
    assert "published" in text and "boundary_data" in text


def test_no_warning_when_they_agree_or_attributes_are_unknown(tmp_path):
    assert "WARNING" not in _write_profile(tmp_path, forbidden=list(CATEGORIES), **CHILD).describe()
    assert "WARNING" not in _write_profile(tmp_path, forbidden=["Violence"]).describe()
    plain = PSAProfile(torch.ones(1, 4), (ProfileLabel("a", ("Hate",), None, "x"),))
    assert "WARNING" not in plain.describe()


def test_attribute_forbidden_is_the_sage_policy_set():
    adult = StructuredProfile.create(age=30, gender="male", religion="None", mental_condition="healthy",
                                     physical_condition="healthy", forbidden=["Hate"])
    assert attribute_forbidden(adult) == ()
    assert attribute_forbidden(StructuredProfile.create(**CHILD)) == CATEGORIES
    assert attribute_forbidden(StructuredProfile.create(forbidden=["Hate"])) is None


def test_adapter_metadata_says_whether_it_was_trained_with_boundary_data():
    assert adapter_boundary_data({"training": json.dumps({"steps": 3})}) is None
    assert adapter_boundary_data({}) is None
    meta = {"training": json.dumps({"boundary_data": {"recipe": "resampled explicit categories", "share": 0.5}})}
    assert adapter_boundary_data(meta)["share"] == 0.5


def test_forbidden_only_fill_names_only_the_forbidden_categories():
    profile = StructuredProfile.create(**CHILD).with_categories(["Violence", "Hate"])
    values = template_values(profile, EncodingRecipe(category_notation="forbidden-only"))
    assert values["<<BANNED>>"] == "Hate, Violence"
    assert not any(c in values["<<ALLOWED>>"] for c in CATEGORIES)
    nothing = template_values(profile.with_categories([]), EncodingRecipe(category_notation="forbidden-only"))
    assert nothing["<<BANNED>>"] == "none" and nothing["<<ALLOWED>>"] == "every category"
    published = template_values(profile)   # the published fill is unchanged
    assert published["<<BANNED>>"] == "['Hate', 'Violence']" and "'Sexuality'" in published["<<ALLOWED>>"]


def test_resampled_users_get_pairs_consistent_with_their_new_sets():
    from training.boundaries import resample

    records, forbidden = [], {}
    for uid, cats in (("0000001", ("Hate",)), ("0000002", ()), ("0000003", CATEGORIES)):
        forbidden[uid] = cats
        for cat in CATEGORIES:
            safe_chosen = cat in cats
            chosen, rejected = (f"{cat}_safe.png", f"{cat}.png") if safe_chosen else (f"{cat}.png", f"{cat}_safe.png")
            records.append({"file_name": chosen, "chosen": chosen, "rejected": rejected, "caption": f"a {cat}",
                            "category": cat, "user_data": {"User_ID": uid}})
    out, new_users = resample(records, forbidden, share=1.0, seed=0, first_new_id=10)
    assert len(new_users) == 3 and len(out) == 2 * len(records)
    for new_id, (source, cats) in new_users.items():
        assert cats != forbidden[source]
        mine = [r for r in out if r["user_data"]["User_ID"] == new_id]
        assert len(mine) == len(CATEGORIES)
        for r in mine:
            assert r["chosen"].endswith("_safe.png") == (r["category"] in cats), r
            assert r["file_name"] == r["chosen"] and r["user_data"]["Resampled_From"] == source


def test_resampling_needs_each_pairs_category():
    from training.boundaries import resample
    from training.data import DataValidationError

    record = {"chosen": "a.png", "rejected": "b.png", "caption": "x", "user_data": {"User_ID": "1"}}
    with pytest.raises(DataValidationError, match="category"):
        resample([record], {"0000001": ("Hate",)}, share=1.0, seed=0, first_new_id=5)
    out, _ = resample([record], {"0000001": ("Hate",)}, share=1.0, seed=0, first_new_id=5,
                      category_map={"x": "Hate"})
    assert len(out) == 2
