"""An independent implementation of the reference PSA computation, for comparison in tests.

Written from ``psa-reference.md`` §3 alone, sharing no code with ``psa_model``: it reads the
adapter's raw tensors, computes the user tokens by hand, and installs an ``attn2`` *replace*
patch on every cross-attention layer that evaluates
``softmax(q K_text^T/√d) V_text + s · softmax(q K_user^T/√d) V_user`` explicitly — the way the
reference's attention processor does (an extra attention per layer, text attention unaware of
the user tokens).
"""
from __future__ import annotations

import torch


def reference_tokens(state: dict[str, torch.Tensor], embeddings: torch.Tensor, tokens_t: int) -> torch.Tensor:
    """tokens = LayerNorm(Linear(e)).reshape(T, c), by hand. [P, T, c]."""
    w, b = state["user_proj.proj.weight"].double(), state["user_proj.proj.bias"].double()
    gamma, beta = state["user_proj.norm.weight"].double(), state["user_proj.norm.bias"].double()
    x = (embeddings.double() @ w.T + b).reshape(embeddings.shape[0], tokens_t, -1)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta


def _explicit_attention(q, k, v, heads):
    b, n, h = q.shape
    d = h // heads
    qh = q.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    kh = k.reshape(k.shape[0], -1, heads, d).permute(0, 2, 1, 3)
    vh = v.reshape(v.shape[0], -1, heads, d).permute(0, 2, 1, 3)
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, dim=-1)
    return (weights @ vh).permute(0, 2, 1, 3).reshape(b, n, h)


def install_reference(model_patcher, state: dict[str, torch.Tensor], sites: list[tuple[str, int, int]],
                      embeddings: torch.Tensor, scale: float, tokens_t: int = 1):
    """A clone of ``model_patcher`` computing PSA the reference way (replace patches)."""
    user_tokens = reference_tokens(state, embeddings, tokens_t)
    null_tokens = reference_tokens(state, torch.zeros(1, embeddings.shape[1]), tokens_t)
    m = model_patcher.clone()
    for i, (block_name, block_id, block_index) in enumerate(sites):
        wk = state[f"layers.{i}.to_k_user.weight"].double()
        wv = state[f"layers.{i}.to_v_user.weight"].double()

        def replace(q, k, v, extra_options, wk=wk, wv=wv):
            heads = extra_options["n_heads"]
            chunks = extra_options["cond_or_uncond"]
            per = q.shape[0] // len(chunks)
            rows = []
            for kind in chunks:
                t = user_tokens if kind == 0 else null_tokens
                rows.append(t.expand(per, -1, -1) if t.shape[0] == 1 else t)
            tokens = torch.cat(rows)
            text = _explicit_attention(q.double(), k.double(), v.double(), heads)
            user = _explicit_attention(q.double(), tokens @ wk.T, tokens @ wv.T, heads)
            return (text + scale * user).to(q.dtype)

        m.set_model_attn2_replace(replace, block_name, block_id, block_index)
    return m
