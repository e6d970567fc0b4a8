"""The dev kit: what the tests, the benchmarks, the toy world and the entry points share.

Tiny model builders and the UNet/VAE configurations (:mod:`devkit.fixtures`,
:mod:`devkit.unet_configs`), random adapters for tests (:mod:`devkit.random_adapters`), the demo
models folder (:mod:`devkit.demo_models`), the ComfyUI server manager and HTTP client
(:mod:`devkit.comfy_server`), workflow helpers (:mod:`devkit.workflows`), the pack loaded by path
(:mod:`devkit.pack_loader`) and command-line helpers (:mod:`devkit.cli`).

Layering (README: Architecture): entry points → toy_world / benchmarks → devkit → nodes /
training → psa_model. The product (``nodes/``, ``training/``, ``psa_model/``) never imports it.
"""
