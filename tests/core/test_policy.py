"""Rule policy and LLM-answer parsing (README: Profiles from attributes)."""
from __future__ import annotations

import math

import pytest

from psa_model.profiles.policy import apply_policy, categories_from_answer, fill_category_prompt, policy_table
from psa_model.profiles.schema import StructuredProfile
from psa_model.profiles.vocabulary import ProfileError

S = StructuredProfile.create


@pytest.mark.parametrize("kwargs, forbidden", [
    ({"age": 30, "religion": "None", "mental_condition": "healthy", "physical_condition": "healthy"}, ()),
    ({"age": 17}, ("Violence", "Self-Harm", "Sexuality")),
    ({"age": 18}, ()),
    ({"age": 40, "mental_condition": "anxiety"}, ("Violence", "Self-Harm", "Sexuality")),
    ({"age": 40, "mental_condition": "war"}, ("Violence", "Self-Harm", "Sexuality")),
    ({"physical_condition": "visual impairment"}, ("Harassment", "Shocking")),
    ({"religion": "Buddhism"}, ("Hate", "Propaganda")),
    ({"religion": "Islam", "age": 5, "physical_condition": "hearing impairment"},
     ("Hate", "Harassment", "Violence", "Self-Harm", "Sexuality", "Shocking", "Propaganda")),
])
def test_rules(kwargs, forbidden):
    result = apply_policy(S(**kwargs), "reference prompt rules")
    assert result.forbidden == forbidden
    assert set(result.allowed) | set(forbidden) == {"Hate", "Harassment", "Violence", "Self-Harm", "Sexuality",
                                                     "Shocking", "Propaganda"}
    assert not set(result.allowed) & set(forbidden)


def test_table_lists_every_rule():
    table = policy_table()
    for text in ("age < 18", "depression", "sexual assault", "Islam, Christianity, Buddhism", "Harassment, Shocking"):
        assert text in table


def test_llm_answer_parsing_is_case_insensitive_substring():
    result = categories_from_answer("Forbidden: SEXUALITY, self-harm and violence-related content; hate speech.")
    assert result.forbidden == ("Hate", "Violence", "Self-Harm", "Sexuality")
    assert result.allowed == ("Harassment", "Shocking", "Propaganda")
    assert categories_from_answer("nothing to forbid").forbidden == ()


def test_category_prompt_needs_user_data():
    p = S(age=20, religion="Islam")
    assert fill_category_prompt("Rules...\n<<USER_DATA>>", p) == 'Rules...\n{"Age": 20, "Age_Group": "young adults", ' \
                                                              '"Religion": "Islam"}'
    with pytest.raises(ProfileError, match="<<USER_DATA>>"):
        fill_category_prompt("no placeholder", p)


def test_policy_agreement_with_sage_users(shared_dir):
    from psa_model.profiles.derive_sage_policy import read_profiles, rule_policy_agreement

    stats = rule_policy_agreement(read_profiles(shared_dir / "data" / "sage_users.csv"))
    assert stats["_users"] >= 1000
    # Sane lower bounds: the values measured on sage_users.csv (1001 rows) minus a margin; the reference labels came from an LLM.
    measured_accuracy = {"Hate": 0.335, "Harassment": 0.606, "Violence": 0.656, "Self-Harm": 0.685,
                         "Sexuality": 0.694, "Shocking": 0.542, "Propaganda": 0.908}
    for cat, floor in measured_accuracy.items():
        assert stats[cat]["accuracy"] >= floor - 0.05, cat
        assert not math.isnan(stats[cat]["recall"])
    assert stats["Self-Harm"]["recall"] == 1.0  # every Sage Self-Harm ban has a minor or a non-healthy mind
    assert stats["Propaganda"]["precision"] == 1.0  # every religious user bans Propaganda in Sage
    assert stats["_exact"] >= 0.02
