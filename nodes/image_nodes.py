"""PSA Image Grid: one image from a batch, for side-by-side profile comparisons."""
from __future__ import annotations

import math

import torch

from .adapter_nodes import CATEGORY


def image_grid(images: torch.Tensor, columns: int, gap: int) -> torch.Tensor:
    """[B, H, W, C] → [1, rows·H + gaps, columns·W + gaps, C], row-major, white gaps."""
    b, h, w, c = images.shape
    columns = max(1, min(columns, b))
    rows = math.ceil(b / columns)
    grid = torch.ones((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, c), dtype=images.dtype)
    for i in range(b):
        r, col = divmod(i, columns)
        grid[r * (h + gap): r * (h + gap) + h, col * (w + gap): col * (w + gap) + w] = images[i]
    return grid[None]


class PSAImageGrid:
    DESCRIPTION = "Tiles an image batch into one grid image (image i of the batch ↔ profile i of a profile batch)."
    CATEGORY = CATEGORY
    FUNCTION = "grid"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("grid",)
    OUTPUT_TOOLTIPS = ("The grid image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "An image batch, e.g. one image per profile."}),
            "columns": ("INT", {"default": 3, "min": 1, "max": 16, "tooltip": "Images per row."}),
            "gap": ("INT", {"default": 4, "min": 0, "max": 64, "tooltip": "White gap between images, in pixels."}),
        }}

    def grid(self, images, columns: int, gap: int):
        return (image_grid(images, columns, gap),)


NODES = {"PSAImageGrid": (PSAImageGrid, "PSA Image Grid")}
