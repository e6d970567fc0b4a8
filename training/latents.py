"""Image → latent through ComfyUI's VAE, with an optional on-disk cache (issue item 5).

Latents are ``model.process_latent_in(vae.encode(image))`` — ComfyUI's VAE normalises pixels to
[−1, 1] and the latent format applies the scaling factor (reference §4, "latents = VAE mean ×
scaling factor"). Cache entries are keyed by the base checkpoint's identity, the image's path,
size and mtime, the resolution and the flip, so a changed image is re-encoded and the cache can be shared across runs.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from psa_model.formats.adapter_file import atomic_write_bytes

from .data import load_image


class LatentSource:
    def __init__(self, vae, model_patcher, resolution: int, cache_dir: str | Path | None = None,
                 vae_identity: str = "") -> None:
        self.vae = vae
        self.vae_identity = vae_identity  # latents of another checkpoint's VAE must not be reused
        self.model_patcher = model_patcher
        self.resolution = resolution
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, torch.Tensor] = {}
        self.encoded = 0  # VAE encodes done by this object (for tests and benchmarks)

    def _key(self, path: Path, flip: bool) -> str:
        st = path.stat()
        raw = f"{self.vae_identity}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.resolution}|{int(flip)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @torch.no_grad()
    def _encode(self, paths: list[Path], flips: list[bool]) -> torch.Tensor:
        pixels = torch.stack([load_image(p, self.resolution, f) for p, f in zip(paths, flips)])
        raw = self.vae.encode(pixels)
        self.encoded += len(paths)
        return self.model_patcher.model.process_latent_in(raw.float()).cpu()

    def get(self, paths: list[Path], flips: list[bool]) -> torch.Tensor:
        """Latents [B, C, h, w] for the images (flipped where asked)."""
        if self.cache_dir is None:
            return self._encode(paths, flips)
        out: list[torch.Tensor | None] = []
        todo = []
        for i, (p, f) in enumerate(zip(paths, flips)):
            key = self._key(p, f)
            lat = self._memory.get(key)
            file = self.cache_dir / f"{key}.pt"
            if lat is None and file.is_file():
                lat = torch.load(file, map_location="cpu", weights_only=True)
                self._memory[key] = lat
            out.append(lat)
            if lat is None:
                todo.append((i, p, f, key, file))
        if todo:
            fresh = self._encode([t[1] for t in todo], [t[2] for t in todo])
            for (i, _, _, key, file), lat in zip(todo, fresh):
                lat = lat.clone()
                buf = io.BytesIO()
                torch.save(lat, buf)
                atomic_write_bytes(file, buf.getvalue())
                self._memory[key] = lat
                out[i] = lat
        return torch.stack(out)
