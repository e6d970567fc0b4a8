"""Image → VAE posterior (mean and standard deviation) in latent units, with an on-disk cache.

The VAE encoder of a Stable Diffusion checkpoint outputs a diagonal Gaussian per latent pixel.
ComfyUI's ``VAE.encode`` returns its mean (the mode); the reference trainer instead draws a
sample from it at every step. To allow both while caching, this module keeps the posterior
itself: ``mean = process_latent_in(μ)`` and ``std = process_latent_in(μ + σ) − mean`` (the SD1.5
and SDXL latent formats are affine, so a sample is ``mean + std · ε``). The trainer picks the
mean or a fresh sample per step (``--latent-sampling``, ``docs/reference-parity.md``).
``--vae-precision bf16`` encodes with a bf16 copy of the encoder, as the reference's bf16 runs
cast their VAE (``docs/reference-parity.md``, summary table).

Cache entries are keyed by the base checkpoint's identity, the image's path, size and mtime,
the resolution, the resize filter and the flip, so a changed image is re-encoded and the cache
can be shared across runs. Decoded entries are also kept in memory, least recently used first
out, within a byte budget.
"""
from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path

import torch

from psa_model.formats.adapter_file import atomic_write_bytes

from .data import load_image
from .text import ByteBudgetCache

CACHE_VERSION = "posterior-v2"  # entries hold {"mean", "std"}; older mean-only files are not reused


def _kl_first_stage(vae):
    fsm = vae.first_stage_model
    if getattr(fsm, "bn", None) is not None or not hasattr(fsm, "quant_conv"):
        raise TypeError(f"{type(fsm).__name__}: not a Stable Diffusion KL VAE; posterior sampling needs the "
                        "SD1.5/SDXL VAE (train with --latent-sampling mean for other VAEs)")
    return fsm


def bf16_encoder(vae) -> torch.nn.Sequential:
    """A bf16 copy of the VAE's encoder and ``quant_conv`` on the VAE's device (``--vae-precision bf16``).

    A copy, so the VAE ComfyUI loaded keeps its own dtype; the encoder is the small half of the VAE.
    """
    fsm = _kl_first_stage(vae)
    return torch.nn.Sequential(copy.deepcopy(fsm.encoder), copy.deepcopy(fsm.quant_conv)).to(
        device=vae.device, dtype=torch.bfloat16).eval().requires_grad_(False)


def posterior_moments(vae, pixels: torch.Tensor,
                      encoder: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of the VAE posterior for IMAGE-layout pixels [B, H, W, 3] in [0, 1] (VAE units).

    The same steps as ComfyUI's ``VAE.encode`` (crop to the VAE's stride, map to [−1, 1],
    encoder, ``quant_conv``) but stopping before the regulariser picks the mode, so the
    log-variance is kept. The logvar clamp [−30, 20] is the one ComfyUI's distribution applies.
    ``encoder`` (from :func:`bf16_encoder`) replaces the VAE's encoder and ``quant_conv``; the
    pixels are cast to its dtype.
    """
    import comfy.model_management as mm  # noqa: PLC0415 - needs ComfyUI on sys.path

    fsm = _kl_first_stage(vae)
    x = vae.vae_encode_crop_pixels(pixels).movedim(-1, 1)
    if encoder is None:
        mm.load_models_gpu([vae.patcher])
        x = vae.process_input(x).to(vae.vae_dtype).to(vae.device)
        moments = fsm.quant_conv(fsm.encoder(x)).float()
    else:
        x = vae.process_input(x).to(next(encoder.parameters()).dtype).to(vae.device)
        moments = encoder(x).float()
    mean, logvar = moments.chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))


class LatentSource:
    """Posterior moments of training images, from the cache or freshly encoded.

    ``get`` returns the mean latents [B, C, h, w]; ``get_moments`` returns (mean, std).
    """

    def __init__(self, vae, model_patcher, resolution: int, cache_dir: str | Path | None = None,
                 vae_identity: str = "", resize_filter: str = "bicubic", memory_bytes: int = 1024 * 2**20,
                 crop_rounding: str = "pack", vae_precision: str = "auto") -> None:
        if vae_precision not in ("auto", "bf16"):
            raise ValueError(f"vae_precision must be 'auto' or 'bf16', got {vae_precision!r}")
        self.vae = vae
        self.vae_identity = vae_identity  # latents of another checkpoint's VAE must not be reused
        self.model_patcher = model_patcher
        self.resolution = resolution
        self.resize_filter = resize_filter
        self.crop_rounding = crop_rounding
        self.vae_precision = vae_precision
        self._encoder: torch.nn.Module | None = None  # the bf16 copy, made at the first encode that needs it
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory = ByteBudgetCache(memory_bytes)
        self.encoded = 0  # VAE encodes done by this object (for tests and benchmarks)

    def _key(self, path: Path, flip: bool) -> str:
        st = path.stat()
        raw = (f"{CACHE_VERSION}|{self.vae_identity}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|"
               f"{self.resolution}|{self.resize_filter}|{int(flip)}"
               + ("|reference-crop" if self.crop_rounding == "reference" else "")
               + ("|vae-bf16" if self.vae_precision == "bf16" else ""))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @torch.no_grad()
    def _encode(self, paths: list[Path], flips: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([load_image(p, self.resolution, f, self.resize_filter, self.crop_rounding)
                              for p, f in zip(paths, flips)])
        if self.vae_precision == "bf16" and self._encoder is None:
            self._encoder = bf16_encoder(self.vae)
        mu, sigma = posterior_moments(self.vae, pixels, self._encoder)
        self.encoded += len(paths)
        to_latent = self.model_patcher.model.process_latent_in
        mean = to_latent(mu)
        return mean.cpu(), (to_latent(mu + sigma) - mean).cpu()

    def get_moments(self, paths: list[Path], flips: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) latents [B, C, h, w] for the images (flipped where asked)."""
        if self.cache_dir is None:
            return self._encode(paths, flips)
        out: list[dict | None] = []
        todo = []
        for i, (p, f) in enumerate(zip(paths, flips)):
            key = self._key(p, f)
            entry = self._memory.get((key,))
            file = self.cache_dir / f"{key}.pt"
            if entry is None and file.is_file():
                entry = torch.load(file, map_location="cpu", weights_only=True)
                self._memory.put((key,), entry)
            out.append(entry)
            if entry is None:
                todo.append((i, p, f, key, file))
        if todo:
            mean, std = self._encode([t[1] for t in todo], [t[2] for t in todo])
            for j, (i, _, _, key, file) in enumerate(todo):
                entry = {"mean": mean[j].clone(), "std": std[j].clone()}
                buf = io.BytesIO()
                torch.save(entry, buf)
                atomic_write_bytes(file, buf.getvalue())
                self._memory.put((key,), entry)
                out[i] = entry
        return torch.stack([e["mean"] for e in out]), torch.stack([e["std"] for e in out])

    def get(self, paths: list[Path], flips: list[bool]) -> torch.Tensor:
        """Mean latents [B, C, h, w] (what ComfyUI's ``VAE.encode`` gives, in the model's latent units)."""
        return self.get_moments(paths, flips)[0]
