"""The user branch of a PSA cross-attention layer (docs/reference-parity.md, "The adapter").

``out = Attn(q, K_text, V_text) + s · Attn(q, K_user, V_user)`` before the layer's ``to_out``.
These functions compute only the second term's ``Attn(q, K_user, V_user)``; the text term is
ComfyUI's own attention, untouched.
"""
from __future__ import annotations

import torch
from einops import rearrange


def user_attention(q: torch.Tensor, k_user: torch.Tensor, v_user: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Multi-head softmax attention of queries over the user tokens.

    q: [B, N, h]; k_user, v_user: [B, T, h] → [B, N, h]. Same head split as the text attention.
    """
    h = q.shape[-1]
    if h % n_heads:
        raise ValueError(f"inner dim {h} is not divisible by {n_heads} heads")
    qh, kh, vh = (rearrange(x, "b n (heads d) -> b heads n d", heads=n_heads) for x in (q, k_user, v_user))
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh)
    return rearrange(out, "b heads n d -> b n (heads d)")


def single_token_user_branch(v_user: torch.Tensor) -> torch.Tensor:
    """The exact T = 1 form: softmax over one key is 1, so the branch is ``V_user`` at every query.

    v_user: [B, 1, h] → [B, 1, h] (broadcasts over the N query positions). docs/reference-parity.md,
    "The adapter" (one user token).
    """
    if v_user.shape[1] != 1:
        raise ValueError(f"single-token form needs T = 1, got T = {v_user.shape[1]}")
    return v_user


def output_delta(to_out: torch.nn.Module, branch: torch.Tensor, scale: float) -> torch.Tensor:
    """What adding ``s · branch`` before ``to_out`` adds after it: ``to_out(s·branch) − to_out(0)``.

    ``to_out`` is affine, so this is ``W_out · s · branch`` with the bias cancelled. The module is
    *called* (never its ``.weight`` read) so LoRA and low-VRAM on-the-fly weight patches apply.
    """
    zero = torch.zeros((1, 1, branch.shape[-1]), device=branch.device, dtype=branch.dtype)
    return to_out(branch * scale) - to_out(zero)
