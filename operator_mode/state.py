"""What one ComfyUI process holds in operator mode: the configuration (or why it is broken),
who owns which prompt and client id, and the refusal counts."""
from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from psa_model.operator.access import Ownership, RefusalLedger
from psa_model.operator.config import ConfigError, OperatorConfig, load_config
from psa_model.operator.graph import NodeSignature


@dataclass
class OperatorState:
    config: OperatorConfig | None
    broken: str = ""
    owners: Ownership = field(default_factory=Ownership)
    refusals: RefusalLedger = field(default_factory=RefusalLedger)

    @classmethod
    def load(cls, path: str) -> "OperatorState":
        """Never raises for a bad file: the state is then ``broken`` and the middleware refuses everything."""
        try:
            return cls(load_config(path))
        except ConfigError as exc:
            return cls(None, broken=f"configuration error: {exc}")


def node_signature(class_type: str) -> NodeSignature | None:
    """The output types ComfyUI declares for a node type (what its links carry), or None if not installed."""
    import nodes  # noqa: PLC0415 - ComfyUI's node table, complete only once every pack has loaded

    cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if cls is None:
        return None
    return NodeSignature(tuple(t if isinstance(t, str) else "COMBO" for t in cls.RETURN_TYPES))


def error_response(status: int, reason: str, message: str, details: str = "",
                   node_errors: dict | None = None) -> web.Response:
    """ComfyUI's error shape (``error`` + ``node_errors``), which the editor shows like a validation error."""
    return web.json_response({"error": {"type": f"psa_operator_{reason}", "message": message, "details": details,
                                        "extra_info": {}}, "node_errors": node_errors or {}}, status=status)
