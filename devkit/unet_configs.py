"""The one home of the UNet and VAE configurations the tests, benchmarks and toy world build.

Each is a keyword set for ComfyUI's ``UNetModel`` (and, for the UNets, the ``unet_config`` of its
``supported_models`` classes). The SD1.5 and SDXL *layouts* keep the real block structure and
cross-attention sites (16 for SD1.5, 70 for SDXL, with their block names); only the channel
widths differ between the tiny test fixtures and the full-size models.
"""
from __future__ import annotations

# SD1.5: 16 cross-attention sites, CLIP-L context (768), 8 heads.
SD15_LAYOUT = dict(image_size=32, in_channels=4, out_channels=4, num_res_blocks=[2, 2, 2, 2],
                   transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                   transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], context_dim=768, num_heads=8,
                   num_head_channels=-1, use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False,
                   adm_in_channels=None, use_temporal_attention=False)
# SDXL: 70 cross-attention sites, CLIP-L + bigG context (2048), 64-channel heads, pooled-text ADM.
SDXL_LAYOUT = dict(image_size=32, in_channels=4, out_channels=4, num_res_blocks=[2, 2, 2],
                   transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
                   transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], context_dim=2048, num_head_channels=64,
                   num_heads=-1, use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False,
                   adm_in_channels=2816, num_classes="sequential", use_temporal_attention=False)


def sd15_config(channels: int = 320, mult: tuple[int, ...] = (1, 2, 4, 4)) -> dict:
    """The SD1.5 layout at these widths (``channels=320, mult=(1, 2, 4, 4)`` is the real SD1.5 UNet)."""
    return dict(SD15_LAYOUT, model_channels=channels, channel_mult=list(mult))


# The test fixtures: 320 channels at every level (devkit/fixtures.py).
SD15_TINY = sd15_config(320, (1, 1, 1, 1))
SDXL_TINY = dict(SDXL_LAYOUT, model_channels=320, channel_mult=[1, 1, 1])
# Full size (860 M / 2.6 B parameters), for benchmarks and the meta-device shape checks.
SD15_FULL = sd15_config(320, (1, 2, 4, 4))
SDXL_FULL = dict(SDXL_LAYOUT, model_channels=320, channel_mult=[1, 2, 4])

# The SD VAE's real shape (first-stage autoencoder, 4 latent channels).
VAE_CONFIG = dict(
    double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
    ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0,
)
