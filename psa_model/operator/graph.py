"""The prompt check: a non-admin's API-format graph is refused unless every sampler is personalised,
and is pinned to the caller's own profile, adapter and output folder (docs/deployment.md, "The
prompt check").

Works on the dict ``POST /prompt`` carries (``{node_id: {"class_type", "inputs"}}``) and on the
node signatures (output types) the server knows; nothing here imports ComfyUI. The rules follow
the MODEL along every link, judged by the type its source node declares:

* PSA Model Patcher takes an unpatched MODEL; PSA Apply Profile and PSA KSampler take the
  patcher's MODEL directly;
* any other node that takes a MODEL and returns one (a LoRA, a model patch, a merge) must sit
  *before* the patcher: after it, it could undo the PSA layers;
* any other node that takes a MODEL and returns none (KSampler, a guider) is a sampler: its
  MODEL must come from PSA Apply Profile.

One violation anywhere refuses the whole graph.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import OperatorConfig, UserPolicy

PATCHER, APPLY, PSA_KSAMPLER = "PSAModelPatcher", "PSAApplyProfile", "PSAKSampler"
LOAD_PROFILE, PROFILE_BATCH = "PSALoadProfile", "PSAProfileBatch"
PROFILE_TYPE, MODEL_TYPE = "PSA_PROFILE", "MODEL"
PSA_MODEL_SOURCES = {PATCHER, APPLY}


@dataclass(frozen=True)
class NodeSignature:
    """What the check needs to know of a node type: its output types, in order."""

    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """One reason a graph is refused, tied to a node (and input) like a ComfyUI validation error."""

    node_id: str
    class_type: str
    reason: str          # a short code, counted by the status route
    message: str
    input_name: str | None = None


class PromptRefused(Exception):
    """The graph breaks the caller's policy; ``problems`` names each node and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"node {p.node_id} ({p.class_type}): {p.message}" for p in problems))


def is_link(value: object) -> bool:
    """ComfyUI's link form in an API prompt: ``[source_node_id, output_index]``."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class _Check:
    def __init__(self, prompt: dict, user: UserPolicy, config: OperatorConfig,
                 signatures: Callable[[str], NodeSignature | None]) -> None:
        self.prompt, self.user, self.config, self.signatures = prompt, user, config, signatures
        self.problems: list[Problem] = []
        self.sigs: dict[str, NodeSignature] = {}

    def refuse(self, node_id: str, reason: str, message: str, input_name: str | None = None) -> None:
        class_type = str(self.prompt.get(node_id, {}).get("class_type", "?")) if isinstance(
            self.prompt.get(node_id), dict) else "?"
        self.problems.append(Problem(str(node_id), class_type, reason, message, input_name))

    # -- structure, allowlist, signatures ---------------------------------------------------------
    def structure(self) -> bool:
        if not isinstance(self.prompt, dict) or not self.prompt:
            self.problems.append(Problem("", "", "malformed_graph", "the prompt must be a non-empty object of nodes"))
            return False
        for node_id, node in self.prompt.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                    or not isinstance(node.get("inputs", {}), dict):
                self.refuse(node_id, "malformed_graph", "a node needs a 'class_type' string and an 'inputs' object")
                continue
            class_type = node["class_type"]
            if class_type not in self.config.allowed_nodes:
                self.refuse(node_id, "node_not_allowed", f"node type '{class_type}' is not allowed for "
                            f"user '{self.user.name}' (the operator's allowed_nodes list)")
                continue
            sig = self.signatures(class_type)
            if sig is None:
                self.refuse(node_id, "node_unknown", f"node type '{class_type}' is not installed on this server")
                continue
            self.sigs[node_id] = sig
        return not self.problems

    def link_type(self, node_id: str, input_name: str, link: list) -> tuple[str, str] | None:
        """(source node id, declared type) of a link, or None after refusing a dangling one."""
        source = str(link[0])
        sig = self.sigs.get(source)
        if sig is None or not 0 <= link[1] < len(sig.outputs):
            self.refuse(node_id, "malformed_graph", f"input '{input_name}' links to a missing node or output",
                        input_name)
            return None
        return source, sig.outputs[link[1]]

    # -- the rules --------------------------------------------------------------------------------
    def links(self) -> None:
        for node_id, node in self.prompt.items():
            class_type = node["class_type"]
            returns_model = MODEL_TYPE in self.sigs[node_id].outputs or "*" in self.sigs[node_id].outputs
            if PROFILE_TYPE in self.sigs[node_id].outputs and class_type not in (LOAD_PROFILE, PROFILE_BATCH):
                self.refuse(node_id, "profile_source", "profiles may only come from PSA Load Profile (pinned to "
                            "your profile) or PSA Profile Batch")
            for name, value in node.get("inputs", {}).items():
                if not is_link(value):
                    continue
                typed = self.link_type(node_id, name, value)
                if typed is None:
                    continue
                source, kind = typed
                source_class = self.prompt[source]["class_type"]
                if kind in (MODEL_TYPE, "*"):
                    self.model_link(node_id, class_type, name, source_class, returns_model)

    def model_link(self, node_id: str, class_type: str, name: str, source_class: str, returns_model: bool) -> None:
        if class_type == PATCHER:
            if source_class in PSA_MODEL_SOURCES:
                self.refuse(node_id, "psa_model_misused", "PSA Model Patcher must take the unpatched model", name)
        elif class_type in (APPLY, PSA_KSAMPLER):
            if source_class != PATCHER:
                self.refuse(node_id, "unpersonalised_sampler", "the model must come straight from PSA Model "
                            "Patcher (nothing in between)", name)
        elif returns_model:
            if source_class in PSA_MODEL_SOURCES:
                self.refuse(node_id, "model_changed_after_psa", "this node changes the model after PSA; put it "
                            "before PSA Model Patcher", name)
        elif source_class != APPLY:
            self.refuse(node_id, "unpersonalised_sampler", "this sampler's model must come from PSA Apply Profile "
                        "(or use PSA KSampler); a sampler without your profile is not allowed", name)

    def guidance(self) -> None:
        """Every ``cfg`` is a number >= 1: below 1 the image leans towards the unconditional prediction,
        which carries the null profile, so a negative prompt could draw unpersonalised content."""
        for node_id, node in self.prompt.items():
            if "cfg" in node.get("inputs", {}):
                value = _number(node["inputs"]["cfg"])
                if value is None or value < 1.0:
                    self.refuse(node_id, "cfg_below_one", "cfg must be a number of at least 1: below 1 the "
                                "negative prompt, which PSA does not personalise, shapes the image", "cfg")

    def personal_inputs(self) -> None:
        for node_id, node in self.prompt.items():
            if node["class_type"] not in (APPLY, PSA_KSAMPLER):
                continue
            inputs = node.get("inputs", {})
            scale = inputs.get("psa_scale")
            value = _number(scale)
            if value is None:
                self.refuse(node_id, "value_not_literal", "psa_scale must be a number typed into the node",
                            "psa_scale")
            elif value < self.user.min_psa_scale:
                self.refuse(node_id, "psa_scale_below_minimum", f"psa_scale {value:g} is below your minimum "
                            f"{self.user.min_psa_scale:g}", "psa_scale")
            for name, full in (("start_percent", 0.0), ("end_percent", 1.0)):
                if name in inputs and _number(inputs[name]) != full:
                    self.refuse(node_id, "window_narrowed", f"{name} must be {full:g}: PSA must cover the whole "
                                "sampling schedule", name)
            if not is_link(inputs.get("profile")):
                self.refuse(node_id, "profile_source", "the profile input must be connected", "profile")

    # -- pinning ----------------------------------------------------------------------------------
    def pinned(self) -> dict:
        out = copy.deepcopy(self.prompt)
        folder = f"{self.config.output_subfolder}/{self.user.name}"
        for node in out.values():
            inputs = node.setdefault("inputs", {})
            if node["class_type"] == LOAD_PROFILE:
                inputs["profile_name"] = self.user.profile
            if node["class_type"] == PATCHER and self.user.adapter:
                inputs["adapter_name"] = self.user.adapter
            if "filename_prefix" in inputs:
                inputs["filename_prefix"] = f"{folder}/{_prefix_name(inputs['filename_prefix'])}"
        return out


def _prefix_name(value: object) -> str:
    """The last path component of a filename prefix (a folder the user typed is dropped)."""
    text = value if isinstance(value, str) else ""
    name = text.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name and name not in (".", "..") else "ComfyUI"


def check_and_pin(prompt: dict, user: UserPolicy, config: OperatorConfig,
                  signatures: Callable[[str], NodeSignature | None]) -> dict:
    """The graph to queue for ``user``: a pinned copy, or :class:`PromptRefused` with every problem found.

    Admins' graphs are returned unchanged. For everyone else: every node type is in the allowed
    list, the MODEL rules above hold, profiles come from PSA Load Profile / PSA Profile Batch,
    ``psa_scale`` is a number at least the user's minimum, the window is the whole schedule and
    every ``cfg`` is at least 1.
    The copy has every PSA Load Profile set to the user's profile file, every PSA Model Patcher to
    the user's adapter (when configured) and every ``filename_prefix`` under the user's folder.
    """
    if user.admin:
        return prompt
    check = _Check(prompt, user, config, signatures)
    if check.structure():
        check.links()
        check.personal_inputs()
        check.guidance()
    if check.problems:
        raise PromptRefused(check.problems)
    return check.pinned()


def problems_to_node_errors(problems: list[Problem]) -> dict:
    """ComfyUI's ``node_errors`` shape, so the editor marks each refused node like a validation error."""
    errors: dict[str, dict] = {}
    for p in problems:
        entry = errors.setdefault(p.node_id, {"errors": [], "dependent_outputs": [], "class_type": p.class_type})
        entry["errors"].append({"type": f"psa_operator_{p.reason}", "message": "Refused by operator policy",
                                "details": p.message,
                                "extra_info": {"input_name": p.input_name} if p.input_name else {}})
    return errors


def signature_table(table: Mapping[str, tuple[str, ...]]) -> Callable[[str], NodeSignature | None]:
    """A signature lookup from ``{class_type: output types}`` (tests and tools)."""
    return lambda class_type: NodeSignature(tuple(table[class_type])) if class_type in table else None
