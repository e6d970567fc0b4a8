"""PSA Profile Policy offers the Sage policy (default) and the rule policy (docs/sage_policy.md)."""
from __future__ import annotations

import importlib

import pytest

from devkit.pack_loader import PACK_MODULE, load_pack


@pytest.fixture(scope="module")
def nodes_mod(comfy_host):
    load_pack()
    return importlib.import_module(f"{PACK_MODULE}.nodes.profile_encode_nodes")


def test_both_policies_offered_with_sage_first(nodes_mod):
    inputs = nodes_mod.PSAProfilePolicy.GET_SCHEMA().inputs
    options = next(spec for spec in inputs if spec.id == "forbidden_source").options
    assert options[0] == "Sage policy"  # a combo's first entry is its default
    # strings saved workflows already hold must still load
    for saved in ("rule policy", "explicit / from file", "LLM (needs PSA Encode Profile + category prompt)"):
        assert saved in options


def test_sage_and_rule_policy_through_the_node(nodes_mod):
    def build(*values):
        return nodes_mod.PSAProfilePolicy.execute(*values).result

    args = (nodes_mod.NO_FILE, 15, "male", "Islam", "healthy", "healthy")
    spec, forbidden, allowed, explanation = build(*args, "Sage policy", "")
    assert forbidden == "Sexuality, Propaganda" and spec.forbidden == ("Sexuality", "Propaganda")
    assert allowed == "Hate, Harassment, Violence, Self-Harm, Shocking"
    fired = "rules fired: age group = adolescents → Sexuality; religion = Islam → Sexuality, Propaganda"
    assert fired in explanation and "Hate forbidden when: age group ∈ {infants & toddlers, children}" in explanation
    _, forbidden, _, explanation = build(*args, "rule policy", "")
    assert forbidden == "Hate, Violence, Self-Harm, Sexuality, Propaganda"
    assert "rules fired: minor; restrictive religion" in explanation


def test_explicit_categories_that_contradict_the_attributes_are_warned_about(nodes_mod):
    """The operator allows everything for a 15-year-old Muslim; the Sage policy would forbid
    Sexuality and Propaganda, and an adapter trained on Sage may apply those (README, "Stated
    categories that contradict the attributes")."""
    args = (nodes_mod.NO_FILE, 15, "male", "Islam", "healthy", "healthy", "explicit / from file")
    spec, forbidden, _, explanation = nodes_mod.PSAProfilePolicy.execute(*args, "Violence").result
    assert spec.forbidden == ("Violence",)
    assert "WARNING" in explanation and "[Sexuality, Propaganda]" in explanation and "published" in explanation
    _, _, _, agreeing = nodes_mod.PSAProfilePolicy.execute(*args, "Sexuality, Propaganda").result
    assert "WARNING" not in agreeing
