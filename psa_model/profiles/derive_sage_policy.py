"""Derive the Sage policy from the Sage users and report how well both policies agree with them (docs/sage_policy.md).

    python -m psa_model.profiles.derive_sage_policy [path/to/sage_users.csv] [--write | --check]

Without an option it prints the report: per category and for the exact forbidden set, the
agreement with the Sage users' ``Banned_Categories`` of the rule policy, of the Sage policy on
all users, and of the Sage policy under k-fold cross-validation (the whole derivation repeated
on each training split and applied to the held-out users). ``--write`` stores the derived policy
as ``psa_model/profiles/data/sage_policy.json`` (shipped with the pack); ``--check`` exits 1 when
the shipped file differs from what the data give. Method and fallbacks: ``docs/sage_policy.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from pathlib import Path

from .policy import REFERENCE_POLICY, apply_policy
from .profile import read_sage_users
from .vocabulary import CATEGORIES, ProfileError
from .sage_policy import DATA_FILE, POLICY_ATTRIBUTES, SagePolicy
from .schema import GENDERS, MENTAL_CONDITIONS, PHYSICAL_CONDITIONS, RELIGIONS, StructuredProfile

FORBID_SHARE = 0.95  # a value forbids a category when at least this share of its Sage users ban it
MIN_USERS = 5  # fewer Sage users with a value than this: too few to decide → forbid when uncertain
FOLDS = 5
SEED = 0
_REPO = Path(__file__).resolve().parents[2]
DEFAULT_TABLE = Path(os.environ.get("PSA_SHARED_DIR", _REPO.parent / "shared")) / "data" / "sage_users.csv"
_VOCABULARY = {"gender": GENDERS, "religion": RELIGIONS, "physical_condition": PHYSICAL_CONDITIONS,
               "mental_condition": MENTAL_CONDITIONS}


def read_profiles(table: Path) -> list[StructuredProfile]:
    """``sage_users.csv`` → one validated profile per user (attributes + ``Banned_Categories``)."""
    return [StructuredProfile.from_sage_row(row, name=f"Sage user {uid}")
            for uid, row in read_sage_users(Path(table)).items()]


def derive_age_groups(profiles: list[StructuredProfile]) -> list[dict]:
    """Each Sage age group with the youngest and oldest age observed in it, youngest group first."""
    seen: dict[str, list[int]] = {}
    for p in profiles:
        if p.age is not None and p.age_group is not None:
            seen.setdefault(p.age_group, []).append(p.age)
    groups = sorted(({"name": name, "min_age": min(ages), "max_age": max(ages), "users": len(ages)}
                     for name, ages in seen.items()), key=lambda g: g["min_age"])
    for younger, older in zip(groups, groups[1:]):
        if younger["max_age"] >= older["min_age"]:
            raise ProfileError(f"age groups overlap in the data: {younger['name']} reaches {younger['max_age']}, "
                               f"{older['name']} starts at {older['min_age']}; the age → group mapping is ambiguous")
    return groups


def derive(profiles: list[StructuredProfile], forbid_share: float = FORBID_SHARE,
           min_users: int = MIN_USERS) -> dict:
    """The policy data (age groups, and per attribute value: users, bans per category, forbids)."""
    labelled = [p for p in profiles if p.forbidden is not None]
    age_groups = derive_age_groups(labelled)
    vocabulary = {"age_group": tuple(g["name"] for g in age_groups), **_VOCABULARY}
    values: dict[str, dict[str, dict]] = {}
    for field, _, _ in POLICY_ATTRIBUTES:
        values[field] = {}
        for value in vocabulary[field]:
            users = [p for p in labelled if getattr(p, field) == value]
            banned = {c: sum(c in p.forbidden for p in users) for c in CATEGORIES}
            uncertain = len(users) < min_users
            forbids = list(CATEGORIES) if uncertain else [c for c in CATEGORIES
                                                          if banned[c] >= forbid_share * len(users)]
            values[field][value] = {"users": len(users), "banned": banned, "forbids": forbids,
                                    "uncertain": uncertain}
    return {"method": {"forbid_share": forbid_share, "min_users": min_users},
            "age_groups": age_groups, "values": values}


def agreement(pairs: list[tuple[set[str], set[str]]]) -> dict:
    """(predicted, Sage) forbidden sets → {category: {tp, fp, fn, tn, precision, recall, accuracy},
    "_exact": share of users whose whole set matches, "_users": n}."""
    out: dict = {}
    for cat in CATEGORIES:
        tp = sum(cat in p and cat in t for p, t in pairs)
        fp = sum(cat in p and cat not in t for p, t in pairs)
        fn = sum(cat not in p and cat in t for p, t in pairs)
        tn = len(pairs) - tp - fp - fn
        out[cat] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
                    "precision": tp / (tp + fp) if tp + fp else float("nan"),
                    "recall": tp / (tp + fn) if tp + fn else float("nan"),
                    "accuracy": (tp + tn) / len(pairs)}
    out["_exact"] = sum(p == t for p, t in pairs) / len(pairs)
    out["_users"] = len(pairs)
    return out


def rule_policy_agreement(profiles: list[StructuredProfile], policy: str = REFERENCE_POLICY) -> dict:
    return agreement([(set(apply_policy(p, policy).forbidden), set(p.forbidden)) for p in profiles])


def sage_policy_agreement(policy: SagePolicy, profiles: list[StructuredProfile]) -> dict:
    return agreement([(set(policy.decide(p).forbidden), set(p.forbidden)) for p in profiles])


def cross_validate(profiles: list[StructuredProfile], folds: int = FOLDS, seed: int = SEED, **derive_args) -> dict:
    """k-fold: users shuffled with ``random.Random(seed)``, fold k = every k-th; derive on the other
    folds, decide the held-out users; the agreement is pooled over all held-out users."""
    order = list(range(len(profiles)))
    random.Random(seed).shuffle(order)
    pairs = []
    for k in range(folds):
        held = set(order[k::folds])
        policy = SagePolicy(derive([p for i, p in enumerate(profiles) if i not in held], **derive_args))
        pairs += [(set(policy.decide(profiles[i]).forbidden), set(profiles[i].forbidden)) for i in sorted(held)]
    return agreement(pairs)


def summary(stats: dict) -> dict:
    """The accuracies only, rounded (what the data file records)."""
    return {"exact": round(stats["_exact"], 4), **{c: round(stats[c]["accuracy"], 4) for c in CATEGORIES}}


def build(table: Path, folds: int = FOLDS, seed: int = SEED) -> dict:
    """Everything the shipped data file holds: source, method, age groups, values, agreement."""
    table = Path(table)
    profiles = read_profiles(table)
    data = derive(profiles)
    data["method"].update({"folds": folds, "seed": seed})
    cv = cross_validate(profiles, folds, seed)
    return {"about": "The Sage policy (docs/sage_policy.md). Generated by python -m "
                     "psa_model.profiles.derive_sage_policy --write; do not edit by hand.",
            "source": {"file": table.name, "users": len(profiles),
                       "sha256": hashlib.sha256(table.read_bytes()).hexdigest()},
            **data,
            "agreement": {"all_users": summary(sage_policy_agreement(SagePolicy(data), profiles)),
                          "cross_validated": summary(cv)}}


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def comparison_table(rule: dict, sage_all: dict, sage_cv: dict, folds: int = FOLDS) -> str:
    """Markdown: agreement with the Sage labels of the rule policy and the Sage policy, side by side."""
    lines = [f"| category | Sage bans | rule policy | Sage policy (all users) | Sage policy ({folds}-fold CV) |",
             "|---|---:|---:|---:|---:|"]
    for cat in CATEGORIES:
        bans = rule[cat]["tp"] + rule[cat]["fn"]
        lines.append(f"| {cat} | {bans} | {rule[cat]['accuracy']:.3f} | {sage_all[cat]['accuracy']:.3f} | "
                     f"{sage_cv[cat]['accuracy']:.3f} |")
    lines.append(f"| **exact forbidden set** | | {rule['_exact']:.3f} | {sage_all['_exact']:.3f} | "
                 f"{sage_cv['_exact']:.3f} |")
    return "\n".join(lines)


def seed_spread(profiles: list[StructuredProfile], seeds: range = range(10), folds: int = FOLDS) -> str:
    """How much the cross-validated figures depend on the shuffle: min and mean over ``seeds``."""
    runs = [summary(cross_validate(profiles, folds, s)) for s in seeds]
    keys = ("exact", *CATEGORIES)
    return (f"{folds}-fold CV over shuffle seeds {seeds.start}–{seeds.stop - 1} (min / mean): "
            + "; ".join(f"{k} {min(r[k] for r in runs):.3f} / {sum(r[k] for r in runs) / len(runs):.3f}"
                        for k in keys))


def report(table: Path, folds: int = FOLDS, seed: int = SEED) -> str:
    profiles = read_profiles(table)
    data = derive(profiles)
    policy = SagePolicy(data)
    groups = ", ".join(f"{g['name']} {g['min_age']}–{g['max_age']}" for g in data["age_groups"])
    return "\n\n".join([
        f"{len(profiles)} Sage users from {table}",
        comparison_table(rule_policy_agreement(profiles), sage_policy_agreement(policy, profiles),
                         cross_validate(profiles, folds, seed), folds),
        seed_spread(profiles, folds=folds),
        f"Age groups (ages observed in Sage): {groups}",
        policy.table(), policy.rules()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", type=Path, default=DEFAULT_TABLE, help="sage_users.csv")
    parser.add_argument("--write", action="store_true", help=f"write the derived policy to {DATA_FILE}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the shipped policy differs from the data")
    parser.add_argument("--seed", type=int, default=SEED, help="cross-validation shuffle (report only)")
    args = parser.parse_args(argv)
    if not args.table.is_file():
        parser.error(f"{args.table} not found: pass the path of sage_users.csv")
    if args.write or args.check:
        text = dumps(build(args.table))
        if args.write:
            DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
            DATA_FILE.write_text(text, encoding="utf-8")
            print(f"wrote {DATA_FILE}")
        elif not DATA_FILE.is_file() or DATA_FILE.read_text(encoding="utf-8") != text:
            print(f"{DATA_FILE} differs from what {args.table} gives; run with --write", file=sys.stderr)
            return 1
        else:
            print(f"{DATA_FILE} matches {args.table}")
    print(report(args.table, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
