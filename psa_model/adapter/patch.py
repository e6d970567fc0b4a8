"""PSA as ComfyUI attention patches: the single implementation used by inference and training.

ComfyUI calls ``attn2_patch(n, context, value, extra_options)`` before a cross-attention's
q/k/v and ``attn2_output_patch(n, extra_options)`` after its ``to_out``, with the same
``extra_options`` dict for both calls of one transformer block. This module follows that
calling convention without importing ComfyUI:

- :class:`PSAAdapterPatch` holds the adapter and the model's ``attn2`` modules (layer map
  §3) and provides both callables. In per-group attention (the reference's, any T; see
  ``docs/user-tokens.md``) only the output patch works: every group attends over a single
  key, so the branch is the constant sum of the groups' ``V_user``. In joint attention with
  T > 1 the pre-attention patch computes real attention of the layer's queries over the tokens.
- :class:`UserConditioning` holds one run's per-layer user keys/values (cond rows) and the
  null-profile keys/values (uncond rows), the PSA scale and the sigma window. It travels in
  ``transformer_options[USER_KEY]``, so changing the profile never touches the patched model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .modules import JOINT, PSAAdapter
from .attention import output_delta, single_token_user_branch, user_attention
from .layer_map import LayerSite, match_sites

ADAPTER_KEY = "psa_adapter"  # transformer_options key: the installed PSAAdapterPatch
USER_KEY = "psa_user"  # transformer_options key: the UserConditioning of this run
_BRANCH_KEY = "psa_user_branch"  # per-block scratch between the two patch calls


class PSAError(RuntimeError):
    """Personalization cannot be applied as asked (the run must stop, not fall back)."""


def _require_finite(tensor: torch.Tensor, what: str, fix: str) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise PSAError(f"{what} contain NaN or Inf values: {fix}. Refusing to sample an unpersonalized or "
                       "corrupted image")


def check_denoised_finite(args: dict) -> torch.Tensor:
    """A ``sampler_post_cfg_function``: stop the run when a PSA step's denoised image is not finite.

    ComfyUI would otherwise decode NaN latents into an all-black PNG and report success."""
    denoised = args["denoised"]
    if not bool(torch.isfinite(denoised).all()):
        user = args.get("model_options", {}).get("transformer_options", {}).get(USER_KEY)
        source = user.source if user is not None else "the profile"
        raise PSAError(f"the denoised image became NaN/Inf while PSA was applied for {source}: the adapter or "
                       "embedding drives the model out of range; check them or lower psa_scale")
    return denoised


class _SharedOnCopy:
    """ComfyUI 0.3.75 deep-copies ``model_options`` on every clone: share, never copy, these."""

    def __deepcopy__(self, memo: dict) -> "_SharedOnCopy":
        return self

    def __copy__(self) -> "_SharedOnCopy":
        return self


@dataclass(eq=False)
class UserConditioning(_SharedOnCopy):
    """Per-layer user keys/values for P profiles plus the null profile (docs/reference-parity.md, "The adapter").

    keys/values[i]: [P, T, h_i]; null_keys/null_values[i]: [1, T, h_i].
    ``sigma_range`` = (sigma_start, sigma_end): the branch is applied while
    ``sigma_end <= sigma <= sigma_start`` (ComfyUI's start/end-percent convention).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    null_keys: list[torch.Tensor]
    null_values: list[torch.Tensor]
    scale: float = 1.0
    sigma_range: tuple[float, float] | None = None
    source: str = "the profile"
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_adapter(cls, adapter: PSAAdapter, embeddings: torch.Tensor, scale: float = 1.0,
                     sigma_range: tuple[float, float] | None = None, source: str = "the profile",
                     ) -> "UserConditioning":
        """Project embeddings [P, E] through the adapter (differentiable; callers pick no_grad).

        Fail-closed (README "Fail closed"): user tokens or per-layer keys/values that are not
        finite — a huge embedding overflowing the projection, a damaged adapter — raise
        :class:`PSAError` naming ``source`` instead of sampling a NaN image."""
        if not math.isfinite(scale):
            raise PSAError(f"psa_scale {scale} is not a finite number; use a value such as 1.0")
        tokens = adapter.project(embeddings)
        _require_finite(tokens, f"the user tokens projected from {source}",
                        "its embedding values are far outside what the adapter was trained on; re-create the "
                        "embedding with the encoder the adapter expects")
        kv = adapter.keys_values(tokens)
        null_kv = adapter.keys_values(adapter.null_tokens())
        for i, ((k, v), (k0, v0)) in enumerate(zip(kv, null_kv)):
            for tensor, what in ((k, "keys"), (v, "values"), (k0, "null-profile keys"), (v0, "null-profile values")):
                _require_finite(tensor, f"layer {i} user {what} for {source}",
                                "the adapter's weights or this embedding overflow float32; check the adapter file")
        return cls([k for k, _ in kv], [v for _, v in kv], [k for k, _ in null_kv], [v for _, v in null_kv],
                   scale, sigma_range, source)

    @classmethod
    def off(cls) -> "UserConditioning":
        """The PSA branch switched off (scale 0): the patched UNet computes exactly the base UNet.

        Training's reference prediction (docs/reference-parity.md: the frozen base UNet) uses this instead of
        a second UNet copy; no user projection is computed for it."""
        return cls([], [], [], [], scale=0.0)

    @property
    def profiles(self) -> int:
        return self.values[0].shape[0]

    def is_active(self, sigmas: torch.Tensor | None) -> bool:
        if self.scale == 0.0:
            return False
        if self.sigma_range is None or sigmas is None:
            return True
        sigma = float(sigmas.max())
        start, end = self.sigma_range
        return end <= sigma <= start

    def rows(self, layer: int, cond_or_uncond: list[int], batch: int, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) for a batch laid out as ComfyUI does: one chunk per ``cond_or_uncond`` entry
        (0 = conditional → the user's profile; otherwise → the null profile), ``batch // len``
        rows per chunk, row i of a chunk = latent i."""
        chunks = len(cond_or_uncond)
        if chunks == 0 or batch % chunks:
            raise PSAError(f"cannot split a batch of {batch} rows into {chunks} cond/uncond chunks")
        per_chunk = batch // chunks
        if self.profiles not in (1, per_chunk):
            raise PSAError(
                f"{self.profiles} profiles were given for a latent batch of {per_chunk}: give one profile "
                f"for the whole batch or exactly one per latent (PSA Profile Batch)"
            )
        cache_key = (layer, tuple(cond_or_uncond), per_chunk, device, dtype)
        cacheable = not self.values[layer].requires_grad
        if cacheable and cache_key in self._cache:
            return self._cache[cache_key]
        parts_k, parts_v = [], []
        for kind in cond_or_uncond:
            k, v = (self.keys[layer], self.values[layer]) if kind == 0 else (self.null_keys[layer], self.null_values[layer])
            parts_k.append(k.expand(per_chunk, -1, -1))
            parts_v.append(v.expand(per_chunk, -1, -1))
        out = (torch.cat(parts_k).to(device=device, dtype=dtype), torch.cat(parts_v).to(device=device, dtype=dtype))
        if cacheable:
            # Once per layer and layout: a float16 model overflows values that float32 held.
            _require_finite(out[1], f"layer {layer} user values for {self.source} in {dtype}",
                            "the values exceed this precision; run the model in float32/bfloat16 or lower psa_scale")
            self._cache[cache_key] = out
        return out


class PSAAdapterPatch(_SharedOnCopy):
    """The PSA cross-attention layers of one adapter on one UNet (docs/reference-parity.md, "The adapter").

    ``attn_modules`` are the model's ``attn2`` modules in adapter order (from
    :func:`psa_model.adapter.layer_map.match_sites`); they are called, never read, so weight patches
    such as LoRA apply. ``calls`` counts applied layer branches (a fail-closed check for
    samplers: personalization that never ran must not pass silently).
    """

    def __init__(self, adapter: PSAAdapter, diffusion_model: torch.nn.Module) -> None:
        self.adapter = adapter
        sites = match_sites(adapter.config.architecture, diffusion_model)
        for i, (site, attn) in enumerate(sites.items()):
            inner = int(attn.to_q.weight.shape[0])
            if inner != adapter.config.layer_dims[i]:
                raise ValueError(
                    f"adapter layer {i} ({site}) has width {adapter.config.layer_dims[i]} but the model's "
                    f"cross-attention there has width {inner}: the adapter was made for another model size"
                )
        self.index: dict[tuple[str, int, int], int] = {s.key: i for i, s in enumerate(sites)}
        self.sites: list[LayerSite] = list(sites)
        self._attn = list(sites.values())
        config = adapter.config
        self.multi_token = config.user_attention == JOINT and config.user_tokens > 1
        self.calls = 0

    # -- helpers ---------------------------------------------------------------------------
    def _layer(self, extra_options: dict) -> int:
        block = extra_options.get("block")
        key = (block[0], block[1], extra_options.get("block_index", 0)) if block else None
        if key not in self.index:
            raise PSAError(f"cross-attention layer {key} is not covered by the PSA adapter; "
                           "the model's blocks changed after the adapter was applied")
        return self.index[key]

    @staticmethod
    def _user(extra_options: dict) -> UserConditioning:
        user = extra_options.get(USER_KEY)
        if user is None:
            raise PSAError("this MODEL carries a PSA adapter but no profile: connect it through "
                           "'PSA Apply Profile' or sample with 'PSA KSampler (profile)'")
        return user

    @staticmethod
    def _chunks(extra_options: dict) -> list[int]:
        cond_or_uncond = extra_options.get("cond_or_uncond")
        if not cond_or_uncond:
            raise PSAError("the sampler did not say which rows are conditional (cond_or_uncond missing); "
                           "PSA cannot tell the user's rows from the unconditional ones")
        return list(cond_or_uncond)

    # -- ComfyUI patch callables -----------------------------------------------------------
    def attn2_patch(self, n: torch.Tensor, context, value, extra_options: dict):
        """Before q/k/v (joint, T > 1 only): ``Attn(q, K_user, V_user)`` with the layer's own ``to_q``."""
        user = self._user(extra_options)
        if user.is_active(extra_options.get("sigmas")):
            layer = self._layer(extra_options)
            k, v = user.rows(layer, self._chunks(extra_options), n.shape[0], n.device, n.dtype)
            q = self._attn[layer].to_q(n)
            extra_options[_BRANCH_KEY] = (layer, user_attention(q, k, v, extra_options["n_heads"]))
        return n, context, value

    def attn2_output_patch(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        """After ``to_out``: add ``to_out(s·branch) − to_out(0)`` (exact; see ``output_delta``)."""
        user = self._user(extra_options)
        if not user.is_active(extra_options.get("sigmas")):
            return n
        layer = self._layer(extra_options)
        if self.multi_token:
            stashed = extra_options.pop(_BRANCH_KEY, None)
            if stashed is None or stashed[0] != layer:
                raise PSAError(f"PSA's pre-attention patch did not run for layer {self.sites[layer]}")
            branch = stashed[1]
        else:
            _, v = user.rows(layer, self._chunks(extra_options), n.shape[0], n.device, n.dtype)
            branch = single_token_user_branch(v)
        self.calls += 1
        return n + output_delta(self._attn[layer].to_out, branch, user.scale)

    def install(self, model_patcher) -> None:
        """Register the patches on a (cloned) ComfyUI ``ModelPatcher`` through its public API."""
        if self.multi_token:
            model_patcher.set_model_attn2_patch(self.attn2_patch)
        model_patcher.set_model_attn2_output_patch(self.attn2_output_patch)
        options = dict(model_patcher.model_options.get("transformer_options", {}))
        options[ADAPTER_KEY] = self
        model_patcher.model_options["transformer_options"] = options

    def to(self, device):  # ComfyUI calls .to() on patch objects when moving a model
        """User tensors move lazily with each call's activations (see ``UserConditioning.rows``)."""
        return self


NEVER_RAN = ("the PSA layers never ran during sampling (another patch replaced the attention, or no step fell "
             "inside start/end percent); refusing to return an unpersonalized image")
FAIL_CLOSED_KEY = "psa_fail_closed"  # the key of :func:`require_psa_ran` among a model's sampling wrappers


def require_psa_ran(executor, *args, **kwargs):
    """A sampling wrapper (ComfyUI's ``outer_sample`` wrapper type): raise if no PSA layer ran.

    The sampler's guider is ``executor.class_obj``; its ``model_options`` are the ones this run
    samples with, so the check follows the profile actually in use. Scale 0 is the documented
    off switch (README, "Fail closed") and passes. Raises :class:`PSAError` when a conditioned
    model finished sampling without one PSA branch applied (e.g. a start/end window excluding
    every step, or another pack replacing the cross-attention)."""
    options = getattr(executor.class_obj, "model_options", None) or {}
    transformer_options = options.get("transformer_options", {})
    user, patch = transformer_options.get(USER_KEY), transformer_options.get(ADAPTER_KEY)
    if user is None or patch is None or user.scale == 0.0:
        return executor(*args, **kwargs)
    before = patch.calls
    out = executor(*args, **kwargs)
    if patch.calls == before:
        raise PSAError(NEVER_RAN)
    return out


def installed_adapter(model_options: dict) -> PSAAdapterPatch | None:
    """The PSA patch installed on a MODEL's options, if any."""
    return model_options.get("transformer_options", {}).get(ADAPTER_KEY)


def with_user(model_options: dict, user: UserConditioning) -> dict:
    """A copy of ``model_options`` whose transformer options carry ``user`` (inputs untouched)."""
    options = dict(model_options)
    transformer_options = dict(options.get("transformer_options", {}))
    transformer_options[USER_KEY] = user
    options["transformer_options"] = transformer_options
    return options


def attach_adapter(model_patcher, adapter: PSAAdapter):
    """A clone of a ComfyUI ``ModelPatcher`` with the adapter's PSA layers on every ``attn2``.

    Raises (fail-closed) if the adapter does not fit the UNet or one is already attached; the
    given model is never modified.
    """
    if installed_adapter(model_patcher.model_options) is not None:
        raise PSAError("this MODEL already has a PSA adapter; apply only one PSA Model Patcher per model")
    patch = PSAAdapterPatch(adapter, model_patcher.get_model_object("diffusion_model"))
    patched = model_patcher.clone()
    patch.install(patched)
    return patched


def attach_profile(model_patcher, embeddings: torch.Tensor, scale: float = 1.0,
                   sigma_range: tuple[float, float] | None = None, source: str = "the profile"):
    """A clone whose PSA layers use these user embeddings [P, E] (and the null profile for uncond).

    ``source`` names the profile(s) in errors. The clone also checks every denoised step for
    NaN/Inf (fail-closed), through ComfyUI's list of post-CFG functions, which composes with other
    packs' entries."""
    patch = installed_adapter(model_patcher.model_options)
    if patch is None:
        raise PSAError("this MODEL has no PSA adapter: run it through 'PSA Model Patcher' first")
    if not bool(torch.isfinite(embeddings).all()):
        raise PSAError(f"the embedding of {source} contains NaN or Inf values; re-create the profile's embedding file")
    with torch.no_grad():
        user = UserConditioning.from_adapter(patch.adapter, embeddings.float(), scale, sigma_range, source)
    patched = model_patcher.clone()
    patched.model_options = with_user(patched.model_options, user)
    if check_denoised_finite not in patched.model_options.get("sampler_post_cfg_function", []):
        patched.set_model_sampler_post_cfg_function(check_denoised_finite)
    return patched
