"""Agreement of a rule policy with the Sage users' ``Banned_Categories`` (README: Profiles from attributes).

    python scripts/policy_agreement.py [path/to/sage_users.csv] [--policy NAME]

Prints, per category, precision / recall / accuracy of "policy forbids" against "Sage bans",
and the share of users whose whole forbidden set matches exactly.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psa_model.profiles.policy import DEFAULT_POLICY, POLICIES, apply_policy  # noqa: E402
from psa_model.profiles.schema import StructuredProfile  # noqa: E402
from psa_model.profiles.profile import CATEGORIES  # noqa: E402

DEFAULT_TABLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sage_users.csv"


def agreement(table: Path, policy: str = DEFAULT_POLICY) -> dict:
    """{category: {tp, fp, fn, tn, precision, recall, accuracy}, "_exact": share, "_users": n}."""
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pairs = []
    for row in rows:
        profile = StructuredProfile.from_sage_row(row)
        pairs.append((set(apply_policy(profile, policy).forbidden), set(profile.forbidden)))
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


def format_table(stats: dict) -> str:
    lines = ["| category | Sage bans | policy forbids | precision | recall | accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for cat in CATEGORIES:
        s = stats[cat]
        lines.append(f"| {cat} | {s['tp'] + s['fn']} | {s['tp'] + s['fp']} | {s['precision']:.3f} | "
                     f"{s['recall']:.3f} | {s['accuracy']:.3f} |")
    lines.append(f"\nusers: {stats['_users']}; exact forbidden-set agreement: {stats['_exact']:.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python scripts/policy_agreement.py", description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", type=Path, default=DEFAULT_TABLE,
                        help="the Sage users table, sage_users.csv (default: the shared data's copy)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, choices=list(POLICIES), help="the rule policy to score")
    args = parser.parse_args()
    if not args.table.is_file():
        parser.error(f"table {args.table}: no such file; give the path to sage_users.csv (the published Sage data)")
    print(f"policy: {args.policy}; table: {args.table}")
    print(format_table(agreement(args.table, args.policy)))


if __name__ == "__main__":
    main()
