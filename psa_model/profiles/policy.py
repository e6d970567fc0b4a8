"""Forbidden categories from attributes: a transparent rule table, the Sage policy, or an LLM answer (README: Profiles from attributes; docs/sage_policy.md).

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

The Sage policy (:data:`SAGE_POLICY`, ``sage_policy.py``) has the same shape — per attribute value
a set of forbidden categories, united — but its table is derived from the Sage users' labels
(``docs/sage_policy.md``); :func:`apply_policy` and :func:`policy_explanation` serve both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .sage_policy import load_sage_policy
from .schema import MENTAL_CONDITIONS, StructuredProfile
from .vocabulary import CATEGORIES, ProfileError

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
REFERENCE_POLICY = "reference prompt rules"
POLICIES: dict[str, tuple[Rule, ...]] = {REFERENCE_POLICY: REFERENCE_RULES}
DEFAULT_POLICY = REFERENCE_POLICY
SAGE_POLICY = "Sage policy"  # derived from the Sage labels (sage_policy.py); data, not a rule tuple
POLICY_NAMES = (SAGE_POLICY, *POLICIES)


@dataclass(frozen=True)
class PolicyResult:
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...]
    fired: tuple[str, ...]  # names of the rules that fired
    notes: tuple[str, ...] = ()  # fallbacks the policy used (e.g. an attribute not given)

    def explain(self) -> str:
        fired = "; ".join(self.fired) if self.fired else "none (no rule applies)"
        text = (f"forbidden: {', '.join(self.forbidden) or 'nothing'}\nallowed: {', '.join(self.allowed) or 'nothing'}"
                f"\nrules fired: {fired}")
        return text + "".join(f"\nnote: {note}" for note in self.notes)


def _ordered(categories) -> tuple[str, ...]:
    chosen = set(categories)
    return tuple(c for c in CATEGORIES if c in chosen)


def apply_policy(profile: StructuredProfile, policy: str = DEFAULT_POLICY) -> PolicyResult:
    """The forbidden set ``policy`` gives ``profile``: the union of what the fired rules forbid."""
    if policy == SAGE_POLICY:
        decision = load_sage_policy().decide(profile)
        return PolicyResult(decision.forbidden, tuple(c for c in CATEGORIES if c not in decision.forbidden),
                            decision.fired, decision.notes)
    if policy not in POLICIES:
        raise ProfileError(f"unknown policy {policy!r}; choose one of {list(POLICY_NAMES)}")
    fired = [rule for rule in POLICIES[policy] if rule.test(profile)]
    forbidden = _ordered(c for rule in fired for c in rule.forbid)
    return PolicyResult(forbidden, tuple(c for c in CATEGORIES if c not in forbidden), tuple(r.name for r in fired))


def policy_table(policy: str = DEFAULT_POLICY) -> str:
    """The rule table as Markdown (for the README and the node's output)."""
    if policy == SAGE_POLICY:
        return load_sage_policy().table()
    lines = ["| rule | condition | forbids |", "|---|---|---|"]
    for rule in POLICIES[policy]:
        lines.append(f"| {rule.name} | {rule.condition} | {', '.join(_ordered(rule.forbid))} |")
    lines.append("| (none fired) | e.g. healthy adult, no listed religion | nothing |")
    return "\n".join(lines)


def policy_explanation(result: PolicyResult, policy: str) -> str:
    """What PSA Profile Policy shows: the decision, the rules that fired, then the policy itself."""
    if policy == SAGE_POLICY:
        return f"{result.explain()}\n\nSage policy (derived from the Sage labels):\n{load_sage_policy().summary()}"
    return f"{result.explain()}\n\n{policy_table(policy)}"


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
