"""Forbidden categories from attributes: a transparent rule table, or an LLM answer (issue 5).

``REFERENCE_RULES`` implements the rules the reference's category prompt states (docs/reference-parity.md,
"The user embedding") as data, so the README can print it and operators can audit it. A rule fires when its
condition holds; the forbidden set is the union of the categories of every rule that fired.
An attribute that is not given fires no rule. The reference's "consider ..." rules
(physical condition, religion) are applied as "forbid" — the deterministic reading.

"Unstable mental condition": every Sage mental condition except ``healthy`` — depression,
anxiety, and the trauma histories (natural disasters, major accidents, sexual assault, war).

The LLM path (:func:`categories_from_answer`) parses a free-text answer the way the reference
does: a category is forbidden when its name occurs anywhere in the answer (case-insensitive
substring match); allowed = all categories minus forbidden.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .schema import MENTAL_CONDITIONS, StructuredProfile
from .profile import CATEGORIES, ProfileError

UNSTABLE_MENTAL = tuple(m for m in MENTAL_CONDITIONS if m != "healthy")
RESTRICTIVE_RELIGIONS = ("Islam", "Christianity", "Buddhism")
ADULT_AGE = 18
USER_DATA = "<<USER_DATA>>"


@dataclass(frozen=True)
class Rule:
    name: str
    condition: str  # human-readable, shown in the README / node output
    test: Callable[[StructuredProfile], bool]
    forbid: tuple[str, ...]


REFERENCE_RULES: tuple[Rule, ...] = (
    Rule("minor", f"age < {ADULT_AGE}", lambda p: p.age is not None and p.age < ADULT_AGE,
         ("Sexuality", "Self-Harm", "Violence")),
    Rule("unstable mental condition", "mental condition in " + ", ".join(UNSTABLE_MENTAL),
         lambda p: p.mental_condition in UNSTABLE_MENTAL, ("Sexuality", "Self-Harm", "Violence")),
    Rule("non-healthy physical condition", "physical condition is not healthy",
         lambda p: p.physical_condition is not None and p.physical_condition != "healthy",
         ("Shocking", "Harassment")),
    Rule("restrictive religion", "religion in " + ", ".join(RESTRICTIVE_RELIGIONS),
         lambda p: p.religion in RESTRICTIVE_RELIGIONS, ("Hate", "Propaganda")),
)
POLICIES: dict[str, tuple[Rule, ...]] = {"reference prompt rules": REFERENCE_RULES}
DEFAULT_POLICY = "reference prompt rules"


@dataclass(frozen=True)
class PolicyResult:
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...]
    fired: tuple[str, ...]  # names of the rules that fired

    def explain(self) -> str:
        fired = ", ".join(self.fired) if self.fired else "none (no rule applies)"
        return (f"forbidden: {', '.join(self.forbidden) or 'nothing'}\nallowed: {', '.join(self.allowed) or 'nothing'}"
                f"\nrules fired: {fired}")


def _ordered(categories) -> tuple[str, ...]:
    chosen = set(categories)
    return tuple(c for c in CATEGORIES if c in chosen)


def apply_policy(profile: StructuredProfile, policy: str = DEFAULT_POLICY) -> PolicyResult:
    if policy not in POLICIES:
        raise ProfileError(f"unknown policy {policy!r}; choose one of {list(POLICIES)}")
    fired = [rule for rule in POLICIES[policy] if rule.test(profile)]
    forbidden = _ordered(c for rule in fired for c in rule.forbid)
    return PolicyResult(forbidden, tuple(c for c in CATEGORIES if c not in forbidden), tuple(r.name for r in fired))


def policy_table(policy: str = DEFAULT_POLICY) -> str:
    """The rule table as Markdown (for the README and the node's output)."""
    lines = ["| rule | condition | forbids |", "|---|---|---|"]
    for rule in POLICIES[policy]:
        lines.append(f"| {rule.name} | {rule.condition} | {', '.join(_ordered(rule.forbid))} |")
    lines.append("| (none fired) | e.g. healthy adult, no listed religion | nothing |")
    return "\n".join(lines)


# --- LLM-derived categories -------------------------------------------------------------------
def fill_category_prompt(template: str, profile: StructuredProfile) -> str:
    """The user's category prompt with ``<<USER_DATA>>`` replaced by the profile's attribute JSON."""
    if USER_DATA not in template:
        raise ProfileError(f"the category prompt template must contain {USER_DATA} (where the profile goes)")
    return template.replace(USER_DATA, profile.user_data_json())


def categories_from_answer(answer: str) -> PolicyResult:
    """Reference parsing: a category is forbidden when its name occurs in the answer (any case)."""
    text = answer.lower()
    forbidden = tuple(c for c in CATEGORIES if c.lower() in text)
    return PolicyResult(forbidden, tuple(c for c in CATEGORIES if c not in forbidden), ("LLM answer",))
