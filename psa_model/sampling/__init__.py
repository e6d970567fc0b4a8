"""Samplers and sigma schedules that ComfyUI does not ship, written in ComfyUI's σ-space.

``psa_model.sampling.plms`` — pseudo linear multistep (PLMS), the sampler the reference's SD1.5
pipelines use (docs/reference-parity.md, "Sampling").
``psa_model.sampling.euler`` — Euler steps with diffusers' Euler-discrete start, the reference's
SDXL sampler; ``psa_model.sampling.diffusers_scaling`` — the start and end latent scale both use.
"""
