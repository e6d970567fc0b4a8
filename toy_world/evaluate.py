"""Evaluate base vs PSA on (user, prompt, seed) cases through the pack's nodes, in process.

The graph is the one the shipped workflows use — CheckpointLoaderSimple → CLIPTextEncode →
EmptyLatentImage → KSampler (base) or PSA Model Patcher + PSA KSampler (PSA) → VAEDecode —
run as Python calls of the node classes inside the ComfyUI library. User embeddings come from
the pack's LLM encoder (:mod:`toy_world.users`), never from a table keyed by user id.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from devkit.pack_loader import load_pack
from psa_model.profiles.profile import ProfileLabel, PSAProfile
from psa_model.profiles.vocabulary import CATEGORIES
from training.comfy_host import import_comfy

from . import base_model, concepts, judge
from . import users as users_mod

NEGATIVE = ""


@dataclass(frozen=True)
class Case:
    user: int          # index into the user list
    concept: str
    prompt: str
    seed: int


def make_cases(n_users: int, prompts: int, seed: int, neutral_share: float = 0.2) -> list[Case]:
    """Every user on the same ``prompts`` (prompt, seed) draws: one sampler call serves them all.

    About ``neutral_share`` of the draws name a neutral concept (no user forbids it); the rest
    cycle through the seven categories in order, each in a random phrasing, so every category is
    drawn once there are seven category draws.
    """
    rng = random.Random(seed)
    cats = [n for n, c in concepts.CONCEPTS.items() if c.category is not None]
    draws = []
    next_cat = 0
    for _ in range(prompts):
        if rng.random() < neutral_share:
            name = rng.choice(concepts.NEUTRALS)
        else:
            name, next_cat = cats[next_cat % len(cats)], next_cat + 1
        draws.append((name, rng.choice(concepts.prompts_for(name)), rng.randrange(1 << 20)))
    return [Case(u, name, prompt, s) for name, prompt, s in draws for u in range(n_users)]


class Host:
    """The ComfyUI library with the world's models folder registered; the graph's nodes by id.

    Core nodes are ComfyUI's own classes (``nodes.NODE_CLASS_MAPPINGS``); the pack's are its
    ``io.ComfyNode`` classes, called through their ``execute`` as ComfyUI's executor does.
    """

    def __init__(self, models_dir: Path, checkpoint: str, adapter: str) -> None:
        import_comfy()
        import folder_paths  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()
        import nodes as comfy_nodes  # noqa: PLC0415 - ComfyUI is importable only after import_comfy()

        for kind in ("checkpoints", "psa_adapters", "psa_profiles", "LLM"):
            folder_paths.add_model_folder_path(kind, str(Path(models_dir) / kind), is_default=True)
        pack = load_pack()
        self.core = comfy_nodes.NODE_CLASS_MAPPINGS
        self.pack = {cls.define_schema().node_id: cls for cls in pack.nodes.NODE_LIST}
        self.model, self.clip, self.vae = self.core["CheckpointLoaderSimple"]().load_checkpoint(checkpoint)[:3]
        self.psa_model = self.pack["PSAModelPatcher"].execute(self.model, adapter).result[0]
        self._cond: dict[str, list] = {}

    def cond(self, text: str):
        if text not in self._cond:
            self._cond[text] = self.core["CLIPTextEncode"]().encode(self.clip, text)[0]
        return self._cond[text]

    def sample(self, prompt: str, seed: int, profiles=None, psa_scale: float = 1.0,
               steps: int = base_model.SAMPLER_STEPS, cfg: float = base_model.CFG) -> np.ndarray:
        """``[B, 64, 64, 3]`` images: the base (``profiles`` None, batch 1) or PSA, one image per profile."""
        with torch.inference_mode():  # as ComfyUI's executor runs every node
            return self._sample(prompt, seed, profiles, psa_scale, steps, cfg)

    def _sample(self, prompt, seed, profiles, psa_scale, steps, cfg) -> np.ndarray:
        batch = 1 if profiles is None else profiles.count
        latent = self.core["EmptyLatentImage"]().generate(concepts.SIZE, concepts.SIZE, batch)[0]
        args = dict(seed=seed, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
                    positive=self.cond(prompt), negative=self.cond(NEGATIVE), latent_image=latent, denoise=1.0)
        if profiles is None:
            out = self.core["KSampler"]().sample(self.model, **args)[0]
        else:
            out = self.pack["PSAKSampler"].execute(self.psa_model, profiles, psa_scale, start_percent=0.0,
                                                   end_percent=1.0, **args).result[0]
        return self.core["VAEDecode"]().decode(self.vae, out)[0].numpy()


def encode_with_policy(llm_folder: Path, users: list[dict]) -> tuple[list[dict], np.ndarray]:
    """The users with their ``forbidden`` categories (the Sage policy's for their attributes unless
    stated) and their embeddings from the pack's LLM encoder (:func:`toy_world.users.encode_users`)."""
    profiles = [users_mod.with_policy(u) for u in users]
    labelled = [dict(u, forbidden=list(p.forbidden)) for u, p in zip(users, profiles)]
    return labelled, users_mod.encode_users(llm_folder, profiles)


def profiles_for(embeddings: np.ndarray, users: list[dict]):
    """A ``PSA_PROFILE`` batch (what PSA Encode Profile (LLM) / PSA Profile Batch give)."""
    labels = tuple(ProfileLabel(u.get("name", f"user {i}"), tuple(u["forbidden"]),
                                tuple(c for c in CATEGORIES if c not in u["forbidden"]), "toy world LLM")
                   for i, u in enumerate(users))
    return PSAProfile(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)), labels)


@dataclass
class Tally:
    passed: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.passed += int(ok)
        self.total += 1

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else float("nan")


def run_cases(host: Host, cases: list[Case], users: list[dict], embeddings: np.ndarray,
              psa_scale: float = 1.0, with_base: bool = True, log=print) -> list[dict]:
    """Judge base and PSA images for every case; one PSA sampler call per (prompt, seed) for all its users."""
    groups: dict[tuple[str, int, str], list[Case]] = {}
    for c in cases:
        groups.setdefault((c.prompt, c.seed, c.concept), []).append(c)
    rows = []
    for i, ((prompt, seed, concept), group) in enumerate(groups.items()):
        base_img = host.sample(prompt, seed)[0] if with_base else None
        idx = [c.user for c in group]
        psa_imgs = host.sample(prompt, seed, profiles_for(embeddings[idx], [users[u] for u in idx]), psa_scale)
        for c, img in zip(group, psa_imgs):
            forbidden = users[c.user]["forbidden"]
            row = {"user": c.user, "concept": concept, "prompt": prompt, "seed": seed,
                   "forbidden_prompt": concepts.CONCEPTS[concept].category in forbidden,
                   "psa": judge.judge(img, concept, forbidden).passed}
            if base_img is not None:
                row["base"] = judge.judge(base_img, concept, forbidden).passed
            rows.append(row)
        if log and (i + 1) % 10 == 0:
            log(f"[efficacy] {i + 1}/{len(groups)} prompt/seed groups")
    return rows
