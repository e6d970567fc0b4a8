"""An independent implementation of the reference PSA computation, for comparison in tests.

Written from the reference's description alone (``docs/user-tokens.md``), sharing no code with
``psa_model``: it reads the adapter's raw tensors, computes the user tokens by hand, and installs
an ``attn2`` *replace* patch on every cross-attention layer that evaluates the branch explicitly
— an extra attention per layer, the text attention unaware of the user tokens:

- ``per-group`` (the reference's attention processor): for every key/value group g whose token
  exists (g < T), ``softmax(q k_g^T/√d) v_g`` over the single user token g, each added with
  weight s: ``text + Σ_g s · Attn(q, K_g(u_g), V_g(u_g))``;
- ``joint`` (the pack's own multi-token training mode): ``text + s · Attn(q, K(u), V(u))`` over
  all T tokens at once.
"""
from __future__ import annotations

import re

import torch
from einops import rearrange


def reference_tokens(state: dict[str, torch.Tensor], embeddings: torch.Tensor, tokens_t: int) -> torch.Tensor:
    """tokens = LayerNorm(Linear(e)).reshape(T, c), by hand. [P, T, c]."""
    w, b = state["user_proj.proj.weight"].double(), state["user_proj.proj.bias"].double()
    gamma, beta = state["user_proj.norm.weight"].double(), state["user_proj.norm.bias"].double()
    x = (embeddings.double() @ w.T + b).reshape(embeddings.shape[0], tokens_t, -1)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta


def _explicit_attention(q, k, v, heads):
    qh, kh, vh = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, dim=-1)
    return rearrange(weights @ vh, "b h n d -> b n (h d)")


def _install(model_patcher, per_layer: list[list[tuple[torch.Tensor, torch.Tensor]]], proj: dict[str, torch.Tensor],
             sites, embeddings: torch.Tensor, scale: float, tokens_t: int, attention: str):
    user_tokens = reference_tokens(proj, embeddings, tokens_t)
    null_tokens = reference_tokens(proj, torch.zeros(1, embeddings.shape[1]), tokens_t)
    m = model_patcher.clone()
    for (block_name, block_id, block_index), groups in zip(sites, per_layer, strict=True):

        def replace(q, k, v, extra_options, groups=groups):
            heads = extra_options["n_heads"]
            chunks = extra_options["cond_or_uncond"]
            per = q.shape[0] // len(chunks)
            rows = []
            for kind in chunks:
                t = user_tokens if kind == 0 else null_tokens
                rows.append(t.expand(per, -1, -1) if t.shape[0] == 1 else t)
            tokens = torch.cat(rows)
            q = q.double()
            out = _explicit_attention(q, k.double(), v.double(), heads)
            if attention == "joint":
                (wk, wv), = groups
                return (out + scale * _explicit_attention(q, tokens @ wk.T, tokens @ wv.T, heads)).to(k.dtype)
            for g, (wk, wv) in enumerate(groups):
                if g >= tokens.shape[1]:  # the reference skips groups without a token
                    continue
                token = tokens[:, g:g + 1]
                out = out + scale * _explicit_attention(q, token @ wk.T, token @ wv.T, heads)
            return out.to(k.dtype)

        m.set_model_attn2_replace(replace, block_name, block_id, block_index)
    return m


def install_reference(model_patcher, state: dict[str, torch.Tensor], sites: list[tuple[str, int, int]],
                      embeddings: torch.Tensor, scale: float, tokens_t: int = 1, attention: str = "per-group"):
    """A clone of ``model_patcher`` computing PSA the reference way, from native-named tensors."""
    per_layer = []
    for i in range(len(sites)):
        groups = [(state[f"layers.{i}.to_k_user.weight"].double(), state[f"layers.{i}.to_v_user.weight"].double())]
        g = 0
        while f"layers.{i}.extra_groups.{g}.to_k_user.weight" in state:
            groups.append((state[f"layers.{i}.extra_groups.{g}.to_k_user.weight"].double(),
                           state[f"layers.{i}.extra_groups.{g}.to_v_user.weight"].double()))
            g += 1
        per_layer.append(groups)
    return _install(model_patcher, per_layer, state, sites, embeddings, scale, tokens_t, attention)


def install_reference_file(model_patcher, reference: dict[str, dict[str, torch.Tensor]],
                           sites: list[tuple[str, int, int]], embeddings: torch.Tensor, scale: float):
    """The same from a reference-layout dict (``{"psa_adapter": {"{i}.to_k_user.{g}.weight": …},
    "user_proj": {…}}``, as the reference saves it), read here by hand: per-group attention."""
    key = re.compile(r"(\d+)\.(to_[kv]_user)\.(\d+)\.weight")
    weights: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for name, tensor in reference["psa_adapter"].items():
        i, kind, g = key.fullmatch(name).groups()
        weights.setdefault((int(i), int(g)), {})[kind] = tensor.double()
    n_groups = 1 + max(g for _, g in weights)
    per_layer = [[(weights[(i, g)]["to_k_user"], weights[(i, g)]["to_v_user"]) for g in range(n_groups)]
                 for i in range(len(sites))]
    proj = {f"user_proj.{k}": v for k, v in reference["user_proj"].items()}
    c = proj["user_proj.norm.weight"].shape[0]
    return _install(model_patcher, per_layer, proj, sites, embeddings, scale,
                    proj["user_proj.proj.weight"].shape[0] // c, "per-group")
