"""Stated boundaries vs attributes: when an adapter may follow the attributes instead
(README, "Profiles from attributes": "Stated categories that contradict the attributes").

The published adapters were trained on Sage users, whose forbidden sets follow from their
attributes (docs/sage_policy.md). An embedding names both, and such an adapter may read the
attributes: a profile whose explicit categories differ from what the Sage policy gives for its
attributes can get the policy's categories instead of the stated ones. Adapters trained with
boundary-decorrelated data (``python -m training.boundaries``; the toy world) carry
``boundary_data`` in their training metadata.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Sequence

from .policy import SAGE_POLICY, apply_policy
from .schema import ATTRIBUTES

MARKER_FILE = "boundaries.json"          # beside a split's metadata.jsonl (training.boundaries)
RECIPE_NAME = "resampled explicit categories"
METADATA_KEY = "boundary_data"           # inside the adapter's ``training`` metadata
README_SECTION = 'README, "Stated categories that contradict the attributes"'


def attribute_forbidden(profile) -> tuple[str, ...] | None:
    """What the Sage policy forbids for a :class:`~.schema.StructuredProfile`'s attributes, or None
    when it gives no attribute (only categories)."""
    if all(getattr(profile, f) is None for f in ATTRIBUTES):
        return None
    return apply_policy(replace(profile, forbidden=None, allowed=None), SAGE_POLICY).forbidden


def boundary_warning(name: str, forbidden: Sequence[str] | None, policy: Sequence[str] | None) -> str | None:
    """The summary's warning when the stated categories differ from the attributes' (None if they agree
    or either is unknown)."""
    if forbidden is None or policy is None or set(forbidden) == set(policy):
        return None
    def fmt(cats):
        return ", ".join(cats) or "nothing"
    return (f"WARNING {name}: the stated forbidden categories [{fmt(forbidden)}] differ from what the Sage policy "
            f"gives for its attributes [{fmt(policy)}]. An adapter trained without boundary-decorrelated data — the "
            f"published ones — may follow the attributes and apply [{fmt(policy)}]; adapters whose training "
            f"metadata has '{METADATA_KEY}' were trained to follow the stated categories ({README_SECTION}).")


def adapter_boundary_data(meta: dict) -> dict | None:
    """The ``boundary_data`` an adapter file's metadata records (None: trained without it, e.g. published)."""
    training = meta.get("training")
    if isinstance(training, str):
        try:
            training = json.loads(training)
        except ValueError:
            return None
    value = training.get(METADATA_KEY) if isinstance(training, dict) else None
    return value if isinstance(value, dict) else None
