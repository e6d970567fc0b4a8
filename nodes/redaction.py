"""Remove profile attributes from the prompt and workflow that ComfyUI embeds in saved images.

Used by PSA Save Image (redacted); see docs/security.md, "Privacy". Pure dictionary work on
ComfyUI's two graph formats (no ComfyUI import):

- the API prompt ``{node_id: {"class_type", "inputs"}}``: each sensitive input's value is
  replaced by :data:`REDACTED`; when the input is a link, every literal input of the node it
  comes from (e.g. a primitive node holding the age) is replaced too;
- the UI workflow ``{"nodes": [...], "links": [...]}`` (and the subgraphs in ``definitions``):
  the sensitive nodes' ``widgets_values`` are replaced (all but the non-personal choices, which the
  caller passes in as read from PSA Profile Policy itself), and so are the widget values of nodes
  linked into their sensitive inputs.

The inputs are copied, never changed in place (the same objects go on to the history).
"""
from __future__ import annotations

import copy
from typing import Any, Collection

REDACTED = "<redacted>"

# class_type → inputs that carry a person's attributes (or identify a Sage user, whose row
# in the public table holds that user's attributes).
SENSITIVE_INPUTS: dict[str, tuple[str, ...]] = {
    "PSAProfilePolicy": ("age", "gender", "religion", "mental_condition", "physical_condition", "forbidden"),
    "PSASageUser": ("user_id",),
}
# UI widget values kept as they are: PSA Profile Policy's file choice (first widget) and its
# forbidden_source choice (recognised by value among the node's choices, so the position does not matter).


def redact_prompt(prompt: dict | None) -> dict | None:
    """A copy of an API-format prompt with every sensitive input value replaced."""
    if not isinstance(prompt, dict):
        return prompt
    out = copy.deepcopy(prompt)
    upstream: set[str] = set()
    for node in out.values():
        if not isinstance(node, dict) or node.get("class_type") not in SENSITIVE_INPUTS:
            continue
        inputs = node.get("inputs") or {}
        for name in SENSITIVE_INPUTS[node["class_type"]]:
            value = inputs.get(name)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)):
                upstream.add(str(value[0]))
            elif name in inputs:
                inputs[name] = REDACTED
    for node_id in upstream:
        node = out.get(node_id)
        if isinstance(node, dict):
            for name, value in (node.get("inputs") or {}).items():
                if not isinstance(value, list):
                    node["inputs"][name] = REDACTED
    return out


def _redact_widgets(node: dict, kept_choices: Collection[str]) -> None:
    policy = node.get("type") == "PSAProfilePolicy"
    values = node.get("widgets_values")
    if isinstance(values, dict):
        node["widgets_values"] = {k: (v if policy and k in ("profile_file", "forbidden_source") else REDACTED)
                                  for k, v in values.items()}
    elif isinstance(values, list):
        node["widgets_values"] = [v if policy and (i == 0 or v in kept_choices) else REDACTED
                                  for i, v in enumerate(values)]


def _redact_graph(graph: dict, kept_choices: Collection[str]) -> None:
    nodes = [n for n in graph.get("nodes") or [] if isinstance(n, dict)]
    by_id = {n.get("id"): n for n in nodes}
    link_origin: dict[Any, Any] = {}
    for link in graph.get("links") or []:
        if isinstance(link, list) and len(link) >= 4:
            link_origin[link[0]] = link[1]
        elif isinstance(link, dict):
            link_origin[link.get("id")] = link.get("origin_id")
    for node in nodes:
        kind = node.get("type")
        if kind not in SENSITIVE_INPUTS:
            continue
        _redact_widgets(node, kept_choices)
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("name") in SENSITIVE_INPUTS[kind] and slot.get("link") is not None:
                origin = by_id.get(link_origin.get(slot["link"]))
                if origin is not None:
                    _redact_widgets(origin, kept_choices)
    for sub in (graph.get("definitions") or {}).get("subgraphs") or []:
        if isinstance(sub, dict):
            _redact_graph(sub, kept_choices)


def redact_workflow(workflow: dict | None, kept_choices: Collection[str]) -> dict | None:
    """A copy of a UI-format workflow with the sensitive widget values replaced.

    ``kept_choices``: PSA Profile Policy's ``forbidden_source`` choices, kept wherever they occur in
    its widget values (they say how categories are decided, nothing about the person).
    """
    if not isinstance(workflow, dict):
        return workflow
    out = copy.deepcopy(workflow)
    _redact_graph(out, frozenset(kept_choices))
    return out


def redact_extra_pnginfo(extra: dict | None, kept_choices: Collection[str]) -> dict | None:
    """``extra_pnginfo`` (``{"workflow": ..., ...}``) with the workflow redacted (see :func:`redact_workflow`)."""
    if not isinstance(extra, dict):
        return extra
    return {k: (redact_workflow(v, kept_choices) if k == "workflow" else copy.deepcopy(v)) for k, v in extra.items()}
