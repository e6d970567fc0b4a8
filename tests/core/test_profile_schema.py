"""Structured profiles: validation, canonical JSON, files, nearest Sage user (README: Profiles from attributes)."""
from __future__ import annotations

import csv
import json

import pytest

from psa_model.profiles.schema import StructuredProfile, load_structured_profile
from psa_model.profiles.vocabulary import ProfileError
from psa_model.profiles.sage_nearest import nearest_sage_user, rank, read_users

S = StructuredProfile.create


def test_canonical_values_and_derived_age_group():
    p = S(age=16, gender="Female", religion="none", mental_condition="Major Accidents",
          physical_condition="HEALTHY", forbidden=["violence", "Hate"])
    assert (p.age_group, p.gender, p.religion, p.mental_condition, p.physical_condition) == \
        ("adolescents", "female", "None", "major accidents", "healthy")
    assert p.forbidden == ("Hate", "Violence")
    assert p.allowed == ("Harassment", "Self-Harm", "Sexuality", "Shocking", "Propaganda")
    assert S(age=0).age_group == "infants & toddlers" and S(age=120).age_group == "long-lived elderly"
    assert S(age=59).age_group == "middle-aged" and S(age=60).age_group == "young elderly"


def test_canonical_json_is_sorted_and_ignores_name_and_order():
    a = S(age=30, gender="male", forbidden=["Shocking", "Hate"], name="a")
    b = S(gender="MALE", forbidden="['Hate', 'Shocking']", age="30", name="b")
    assert a.canonical_json() == b.canonical_json()
    data = json.loads(a.canonical_json())
    assert list(data) == sorted(data)
    assert data == {"age": 30, "age_group": "young adults", "gender": "male", "forbidden": ["Hate", "Shocking"],
                    "allowed": ["Harassment", "Violence", "Self-Harm", "Sexuality", "Propaganda"]}
    assert S(age=30).canonical_json() != S(age=31).canonical_json()


@pytest.mark.parametrize("kwargs, message", [
    ({}, "empty profile"),
    ({"age": 121}, "0–120"),
    ({"age": -1}, "0–120"),
    ({"age": 12.5}, "whole number"),
    ({"age": "old"}, "whole number"),
    ({"gender": "robot"}, "allowed: \\['male', 'female'\\]"),
    ({"religion": "Jedi"}, "unknown religion 'Jedi'.*Christianity"),
    ({"mental_condition": "grumpy"}, "unknown mental condition.*depression"),
    ({"physical_condition": "tall"}, "unknown physical condition.*hearing impairment"),
    ({"age": 30, "age_group": "children"}, "belongs to age group 'young adults'"),
    ({"forbidden": ["Gore"]}, "unknown forbidden category 'Gore'"),
    ({"forbidden": ["Hate"], "allowed": ["Hate"]}, "both forbidden and allowed"),
    ({"forbidden": ["Hate"], "allowed": ["Violence"]}, "neither forbidden nor allowed"),
])
def test_bad_input_gives_clear_errors(kwargs, message):
    with pytest.raises(ProfileError, match=message):
        S(**kwargs)


def test_attribute_only_json_file(tmp_path):
    path = tmp_path / "grandma.json"
    path.write_text(json.dumps({"Age": 80, "Religion": "Christianity", "mental": "war", "forbidden": []}))
    p = load_structured_profile(path)
    assert (p.name, p.age_group, p.religion, p.mental_condition, p.forbidden) == \
        ("grandma", "elderly", "Christianity", "war", ())
    (tmp_path / "bad.json").write_text(json.dumps({"age": 30, "favourite_colour": "blue"}))
    with pytest.raises(ProfileError, match="unknown profile key 'favourite_colour'"):
        load_structured_profile(tmp_path / "bad.json")
    (tmp_path / "emb.json").write_text(json.dumps({"embedding": "x.npy"}))
    with pytest.raises(ProfileError, match="PSA Load Profile"):
        load_structured_profile(tmp_path / "emb.json")


def test_every_sage_row_validates_and_centre_file_matches_by_header(shared_dir):
    data = shared_dir / "data"
    users = read_users(data / "sage_users.csv")
    assert len(users) >= 1000
    with open(data / "sage_center_users.csv", newline="") as fh:
        centres = list(csv.DictReader(fh))
    # The centre file orders the Mental/Physical columns the other way round; read by name they agree.
    for row in centres:
        centre = StructuredProfile.from_sage_row(row)
        assert centre.canonical_json() == users[row["User_ID"]].canonical_json()


def _users():
    return {"0000001": S(age=30, gender="male", religion="None", mental_condition="healthy",
                         physical_condition="healthy", forbidden=[]),
            "0000002": S(age=31, gender="female", religion="Islam", mental_condition="war",
                         physical_condition="healthy", forbidden=["Hate"]),
            "0000003": S(age=70, gender="female", religion="Islam", mental_condition="war",
                         physical_condition="healthy", forbidden=["Hate"]),
            "0000004": S(age=31, gender="female", religion="Islam", mental_condition="war",
                         physical_condition="healthy", forbidden=["Hate"])}


def test_nearest_prefers_same_forbidden_set_then_attributes_then_smaller_id():
    users = _users()
    target = S(age=31, gender="male", religion="None", mental_condition="healthy", physical_condition="healthy",
               forbidden=["Hate"])
    # Same forbidden set beats identical attributes (user 1); equal distances → smaller id.
    assert [m.user_id for m in rank(target, users)] == ["0000002", "0000004", "0000003", "0000001"]
    assert rank(S(age=30, gender="male"), users)[0].user_id == "0000001"
    assert rank(target, users, available={"0000003", "0000001"})[0].user_id == "0000003"


def test_nearest_sage_user_uses_only_users_with_embeddings(shared_dir, tmp_path):
    (tmp_path / "sage_embeddings").mkdir()
    for uid in ("0000001", "0000002"):
        (tmp_path / "sage_embeddings" / f"{uid}.npy").write_bytes((shared_dir / "data" / "sage_embeddings" /
                                                                    f"{uid}.npy").read_bytes())
    (tmp_path / "sage_users.csv").write_bytes((shared_dir / "data" / "sage_users.csv").read_bytes())
    # User 2: 20, male, Christianity, depression, healthy, bans Propaganda/Self-Harm/Sexuality/Shocking.
    target = S(age=22, gender="male", religion="Christianity", mental_condition="depression",
               forbidden=["Propaganda", "Self-Harm", "Sexuality", "Shocking"])
    assert nearest_sage_user(target, tmp_path).user_id == "0000002"
    # User 1: 18, male, Islam, healthy/healthy, bans Propaganda/Sexuality.
    assert nearest_sage_user(S(age=18, religion="Islam", forbidden=["Sexuality", "Propaganda"]),
                             tmp_path).user_id == "0000001"
    with pytest.raises(ProfileError, match="sage_users.csv"):
        nearest_sage_user(target, tmp_path / "sage_embeddings")
