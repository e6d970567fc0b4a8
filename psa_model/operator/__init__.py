"""Operator mode's policy layer, pure Python (no ComfyUI import): configuration, identity, the
prompt check and route access. The ComfyUI side is ``operator_mode/`` (docs/deployment.md).

- ``config`` — the configuration file (TOML or JSON), checked key by key.
- ``identity`` — bearer tokens and the trusted proxy's header + shared secret.
- ``graph`` — the check and pin of an API-format prompt for one user.
- ``access`` — which routes non-admins may call, who owns which prompt / client id, refusal counts.
"""
