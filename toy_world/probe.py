"""Can the forbidden set be read from a profile embedding? A linear probe per category notation.

    python -m toy_world.probe [--size full] [--ridge 0.1]

docs/toy-world.md, "Boundaries and attributes": the adapter reads a user through a linear
projection of the embedding, so what a linear map cannot read from the embedding, the adapter
cannot follow. The probe encodes the world's training users and its three groups of unseen users
(whose categories partly contradict their attributes) with each category notation of the encoding
recipe (``psa_model.profiles.recipe.CATEGORY_NOTATIONS``), fits a ridge regression per category on
the training users' standardised embeddings (targets ±1, penalty ``ridge`` × users), and reports for
the unseen users the share of (user, category) bits it gets right and the share of users whose
whole forbidden set it gets right.
"""
from __future__ import annotations

import argparse

import numpy as np

from psa_model.profiles.recipe import CATEGORY_NOTATIONS, EncodingRecipe
from psa_model.profiles.vocabulary import CATEGORIES

from . import users as users_mod
from .world import EVAL_GROUPS, LLM_NAME, add_cache_option, ensure_world


def labels(users: list[dict]) -> np.ndarray:
    """``[users, 7]`` 1 where the user forbids the category (``CATEGORIES`` order)."""
    return np.array([[float(c in u["forbidden"]) for c in CATEGORIES] for u in users])


def fit_probe(emb: np.ndarray, forbidden: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of ±1 targets on standardised embeddings: (mean, scale, weights [E+1, 7])."""
    mean, scale = emb.mean(axis=0), emb.std(axis=0) + 1e-12
    x = np.hstack([(emb - mean) / scale, np.ones((len(emb), 1))])
    penalty = ridge * len(emb) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0   # the intercept is not penalised
    weights = np.linalg.solve(x.T @ x + penalty, x.T @ (2 * forbidden - 1))
    return mean, scale, weights


def predict(probe: tuple[np.ndarray, np.ndarray, np.ndarray], emb: np.ndarray) -> np.ndarray:
    mean, scale, weights = probe
    x = np.hstack([(emb - mean) / scale, np.ones((len(emb), 1))])
    return (x @ weights > 0).astype(float)


def score(predicted: np.ndarray, forbidden: np.ndarray) -> dict:
    """Share of bits right, per category and overall, and share of users with the exact set right."""
    right = predicted == forbidden
    return {"bits": float(right.mean()), "exact_set": float(right.all(axis=1).mean()),
            "per_category": {c: float(right[:, k].mean()) for k, c in enumerate(CATEGORIES)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="full", choices=["full", "small"], help="the world whose users to use")
    add_cache_option(parser)
    parser.add_argument("--ridge", type=float, default=0.1, help="ridge penalty per training user")
    args = parser.parse_args(argv)

    world = ensure_world(args.size, args.cache)
    llm = world.models_dir / "LLM" / LLM_NAME
    train = world.users["seen"]
    unseen = [u for g in EVAL_GROUPS for u in world.users[g]]
    print(f"linear probe, ridge {args.ridge}: fitted on {len(train)} training users, scored on {len(unseen)} unseen "
          f"users ({', '.join(EVAL_GROUPS)})")
    print("| category notation | bits right | exact set right | " + " | ".join(CATEGORIES) + " |")
    print("|---|---|---|" + "---|" * len(CATEGORIES))
    for notation in CATEGORY_NOTATIONS:
        recipe = EncodingRecipe(category_notation=notation)
        emb = {name: users_mod.encode_users(llm, [users_mod.with_policy(u) for u in group], recipe)
               for name, group in (("train", train), ("unseen", unseen))}
        probe = fit_probe(emb["train"], labels(train), args.ridge)
        res = score(predict(probe, emb["unseen"]), labels(unseen))
        mark = " (the toy world's)" if notation == users_mod.ENCODING.category_notation else ""
        print(f"| {notation}{mark} | {res['bits']:.3f} | {res['exact_set']:.3f} | "
              + " | ".join(f"{v:.3f}" for v in res["per_category"].values()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
