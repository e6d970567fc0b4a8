"""PSA Image Grid: one image from a batch, for side-by-side profile comparisons."""
from __future__ import annotations

import math

import torch
from comfy_api.latest import io

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


class PSAImageGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PSAImageGrid",
            display_name="PSA Image Grid",
            category=CATEGORY,
            description="Tiles an image batch into one grid image (image i of the batch ↔ profile i of a profile batch).",
            inputs=[
                io.Image.Input("images", tooltip="An image batch, e.g. one image per profile."),
                io.Int.Input("columns", default=3, min=1, max=16, tooltip="Images per row."),
                io.Int.Input("gap", default=4, min=0, max=64, tooltip="White gap between images, in pixels."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="The grid image.")],
        )

    @classmethod
    def execute(cls, images, columns: int, gap: int) -> io.NodeOutput:
        return io.NodeOutput(image_grid(images, columns, gap))


NODES = [PSAImageGrid]
