"""Fixtures shared by the host-tier training tests."""
from __future__ import annotations

import pytest

from support.training_helpers import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small Sage-layout data set (train/val splits, images, embeddings)."""
    return make_dataset(tmp_path_factory.mktemp("sage"))


@pytest.fixture(scope="module")
def base(sd15_checkpoint):
    """The trainer's frozen base (UNet, text encoder, VAE) of the tiny SD1.5 checkpoint."""
    from training.model import BaseModel, detect_arch

    model, clip, vae = sd15_checkpoint
    return BaseModel(model, clip, vae, detect_arch(model))
