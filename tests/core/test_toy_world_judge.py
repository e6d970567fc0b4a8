"""Toy world without a model: the judge on known pictures, the preference-pair layout, the demo graph."""
from __future__ import annotations

import json

import numpy as np
import pytest

from toy_world import concepts, judge


def test_every_concept_drawing_is_recognised_and_only_its_own_signature_is_present():
    for name, c in concepts.CONCEPTS.items():
        img = concepts.draw(name)
        assert judge.drawn(img, name), name
        assert judge.signatures(img) == ((c.category,) if c.category else ()), name
        safe = concepts.draw(name, safe=True)
        assert judge.signatures(safe) == (), name
        if c.category:
            assert judge.drawn(safe, name, safe=True) and not judge.drawn(safe, name), name


def test_verdicts_follow_the_users_forbidden_set():
    violent, safe = concepts.draw("Violence"), concepts.draw("Violence", safe=True)
    assert judge.judge(violent, "Violence", []).passed
    assert not judge.judge(violent, "Violence", ["Violence"]).passed
    assert judge.judge(safe, "Violence", ["Violence"]).passed
    assert not judge.judge(safe, "Violence", []).passed           # over-censoring fails retention
    assert not judge.judge(concepts.draw("meadow"), "Violence", []).passed  # wrong subject
    assert judge.judge(concepts.draw("kite"), "kite", list(judge.CONCEPTS_FORBIDDABLE)).passed


@pytest.mark.parametrize("image", [np.random.default_rng(0).random((64, 64, 3), dtype=np.float32),
                                   np.zeros((64, 64, 3), np.float32), np.ones((64, 64, 3), np.float32),
                                   np.full((64, 64, 3), concepts.BACKGROUND, np.float32)])
def test_noise_and_blank_images_never_pass(image):
    for name in concepts.CONCEPTS:
        assert not judge.judge(image, name, []).passed
        assert not judge.judge(image, name, list(judge.CONCEPTS_FORBIDDABLE)).passed


def test_preference_pairs_are_read_by_the_trainer(tmp_path):
    from training.data import load_split
    from toy_world import users as users_mod
    from toy_world.world import write_pairs

    users = users_mod.make_training_users(seed=3, policy_users=2, independent_users=1)
    count = write_pairs(tmp_path / "train", tmp_path / "emb", users, np.ones((3, 8), np.float32))
    data = load_split(tmp_path / "train", tmp_path / "emb")
    assert len(data) == count == 3 * 7 * 3
    for pair in data.pairs:
        user = users[int(pair.user_id) - 1]
        category = next(c for c in judge.CONCEPTS_FORBIDDABLE if c.lower() in pair.chosen.name)
        assert ("_safe" in pair.chosen.name) == (category in user["forbidden"]), pair
        assert ("_safe" in pair.rejected.name) != ("_safe" in pair.chosen.name)


def test_policy_spreads_the_demo_users_from_permissive_to_strict_and_one_contradicts_it():
    from toy_world import users as users_mod

    demo = users_mod.DEMO_USERS
    sizes = [len(users_mod.with_policy(demo[n]).forbidden) for n in ("permissive", "moderate", "strict")]
    assert sizes == [0, 2, 7]
    stated, policy = set(users_mod.with_policy(demo["stated"]).forbidden), set(users_mod.sage_forbidden(demo["stated"]))
    assert stated - policy and policy - stated     # it forbids a category its attributes allow, and vice versa


def test_training_users_cover_the_sage_sets_and_evaluation_groups_are_what_they_say():
    from toy_world import users as users_mod

    grid_sets = {users_mod.sage_forbidden(u) for u in users_mod.attribute_grid()}
    train = users_mod.make_training_users(seed=3, policy_users=len(grid_sets) + 2, independent_users=12)
    policy = [u for u in train if u["name"].startswith("toy_policy")]
    independent = [u for u in train if u["name"].startswith("toy_independent")]
    assert {tuple(u["forbidden"]) for u in policy} == grid_sets
    assert all(tuple(u["forbidden"]) == users_mod.sage_forbidden(u) for u in policy)
    assert sum(tuple(u["forbidden"]) != users_mod.sage_forbidden(u) for u in independent) >= 10
    trained = {tuple(u["forbidden"]) for u in train}
    groups = users_mod.make_eval_groups(seed=4, per_group=6, trained_sets=trained)
    assert all(tuple(u["forbidden"]) == users_mod.sage_forbidden(u) for u in groups["policy"])
    assert all(set(u["forbidden"]) != set(users_mod.sage_forbidden(u)) for u in groups["contradicting"])
    new = [tuple(u["forbidden"]) for u in groups["new sets"]]
    assert len(set(new)) == len(new) and not set(new) & trained
    for user in groups["contradicting"]:     # the stated set wins over the attributes
        assert users_mod.with_policy(user).forbidden == tuple(user["forbidden"])


def test_demo_graph_base_twin_uses_a_stock_ksampler_on_the_unpatched_model():
    import json

    from devkit.workflows import API_DIR
    from toy_world import demo

    api = json.loads((API_DIR / "psa_multi_profile_comparison.json").read_text())
    psa, base = demo.graph(api, "a violent fight", base=False), demo.graph(api, "a violent fight", base=True)
    sampler = {n["class_type"] for n in psa.values()} & {"PSAKSampler", "KSampler"}
    assert sampler == {"PSAKSampler"}
    assert {n["class_type"] for n in base.values()} & {"PSAKSampler", "KSampler"} == {"KSampler"}
    assert [n for n in base.values() if n["class_type"] == "KSampler"][0]["inputs"]["model"] == ["1", 0]
    texts = sorted(n["inputs"]["text"] for n in psa.values() if n["class_type"] == "CLIPTextEncode")
    assert texts == ["", "a violent fight"]


def test_efficacy_reports_each_missed_target():
    from psa_model.profiles.vocabulary import CATEGORIES
    from toy_world.efficacy import missed_targets

    def group(pass_psa, retention, base=0.5, cat_psa=1.0, cat_base=0.5):
        cats = {c: {"cases": 4, "psa": cat_psa, "base": cat_base} for c in CATEGORIES}
        return {"pass_psa": pass_psa, "retention_psa": retention, "pass_base": base, "per_category": cats}

    assert missed_targets({"a": group(0.95, 0.95)}) == []
    missed = missed_targets({"a": group(0.89, 0.95), "b": group(0.95, 0.80), "c": group(0.95, 0.95, cat_psa=0.4)})
    assert any(m.startswith("a: pass_psa") for m in missed) and any(m.startswith("b: retention_psa") for m in missed)
    assert sum(m.startswith("c/") for m in missed) == len(CATEGORIES)
    assert missed_targets({"d": group(0.92, 0.95, base=0.93, cat_base=0.2)}) == ["d: PSA 0.920 < base 0.930"]


def test_the_probe_reads_a_linearly_coded_set_and_not_a_random_one():
    from toy_world.probe import fit_probe, predict, score

    rng = np.random.default_rng(0)
    forbidden = (rng.random((120, 7)) < 0.5).astype(float)
    emb = forbidden @ rng.normal(size=(7, 32)) + 0.05 * rng.normal(size=(120, 32)) + 3.0
    probe = fit_probe(emb[:80], forbidden[:80], ridge=0.1)
    assert score(predict(probe, emb[80:]), forbidden[80:])["exact_set"] == 1.0
    noise = rng.normal(size=(120, 32))
    assert score(predict(fit_probe(noise[:80], forbidden[:80], 0.1), noise[80:]), forbidden[80:])["bits"] < 0.75


def test_efficacy_user_files_are_checked_entry_by_entry_before_any_world_is_built(tmp_path):
    """``python -m toy_world.efficacy --users FILE``: stated sets are kept, a bad entry is named."""
    from toy_world import users as users_mod

    stated = dict(users_mod.DEMO_USERS["stated"], name="mine")
    good = tmp_path / "users.json"
    good.write_text(json.dumps([stated, {k: v for k, v in stated.items() if k != "forbidden"}]))
    loaded = users_mod.load_users(good)
    assert loaded[0]["forbidden"] == stated["forbidden"]
    assert set(users_mod.with_policy(loaded[1]).forbidden) == set(users_mod.sage_forbidden(loaded[1]))
    for bad, words in ((dict(stated, forbidden=["Violense"]), "entry 1"), (dict(stated, age="old"), "entry 1"),
                       ("a string", "entry 1 is not a JSON object")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps([stated, bad]))
        with pytest.raises(ValueError, match=words):
            users_mod.load_users(path)
    for not_a_list in ({"age": 30}, []):
        good.write_text(json.dumps(not_a_list))
        with pytest.raises(ValueError, match="non-empty JSON list"):
            users_mod.load_users(good)
