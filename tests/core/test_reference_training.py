"""Reference-recipe training mechanics on toy inputs (docs/reference-parity.md, "Gradient
accumulation as the reference runs it", "Data and images"). No ComfyUI import.

The reference enters ``accelerator.accumulate(unet)`` and ``accelerator.accumulate(user_proj)``
for every micro-batch. ``_Accelerate033`` below re-implements, from accelerate 0.33.0's source,
the parts of ``Accelerator`` that loop touches on one process: ``accumulate`` (``_do_sync``:
counter + 1, sync when it is a multiple of ``gradient_accumulation_steps``), ``backward`` (loss
divided by ``gradient_accumulation_steps``) and the optimiser wrapper (``step`` and
``zero_grad`` do nothing unless gradients are synced).
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from training.accumulation import accumulate_gradients, nested_accumulate_cadence
from training.recipes import RECIPES


class _Accelerate033:
    def __init__(self, gradient_accumulation_steps: int) -> None:
        self.num_steps = gradient_accumulation_steps
        self.step = 0
        self.sync_gradients = False

    @contextlib.contextmanager
    def accumulate(self, _model):
        self.step += 1
        self.sync_gradients = self.step % self.num_steps == 0
        yield

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.num_steps).backward()


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    data = [(torch.randn(3, 4), torch.randn(3, 1)) for _ in range(48)]
    return model, data


def _loss(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten().clone() for p in model.parameters()])


def _reference_loop(accumulation_steps: int):
    """The reference's training loop body, nested contexts and all; returns the gradient at each
    optimiser step (before clipping) and the final parameters."""
    model, data = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    acc = _Accelerate033(accumulation_steps)
    seen = []
    for batch in data:
        with acc.accumulate(model[0]), acc.accumulate(model[2]):
            acc.backward(_loss(model, batch))
            if acc.sync_gradients:
                seen.append(_grads(model))
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
    return seen, torch.cat([p.detach().flatten() for p in model.parameters()])


def _pack_loop(micro_batches: int, loss_divisor: int):
    model, data = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stream = iter(data)
    seen = []
    for _ in range(len(data) // micro_batches):
        opt.zero_grad()
        accumulate_gradients(lambda: _loss(model, next(stream)), micro_batches, loss_divisor)
        seen.append(_grads(model))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return seen, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("recipe, accumulation_steps", [("reference-sd15", 8), ("reference-sdxl", 16)])
def test_recipes_step_and_scale_like_the_reference_loop(recipe, accumulation_steps):
    values = RECIPES[recipe]
    reference_grads, reference_params = _reference_loop(accumulation_steps)
    pack_grads, pack_params = _pack_loop(values["grad_accum"], values["loss_divisor"])
    assert len(reference_grads) == len(pack_grads) == 48 // (accumulation_steps // 2)
    for ref, ours in zip(reference_grads, pack_grads):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(pack_params, reference_params, rtol=1e-6, atol=1e-7)
    # the launch scripts' literal reading (every micro-batch in one step, divided by their count) differs
    naive_grads, _ = _pack_loop(accumulation_steps, accumulation_steps)
    assert len(naive_grads) == len(reference_grads) // 2


def test_cadence_follows_the_counter():
    assert nested_accumulate_cadence(8, 2) == (4, 8)
    assert nested_accumulate_cadence(16, 2) == (8, 16)
    assert nested_accumulate_cadence(8, 1) == (8, 8)  # one context: the documented behaviour
    assert nested_accumulate_cadence(3, 2) == (3, 3)  # odd: the outer context syncs, the body does not
    for steps in (3, 5, 6):
        grads, _ = _reference_loop(steps)
        assert len(grads) == 48 // nested_accumulate_cadence(steps, 2)[0], steps
    with pytest.raises(ValueError, match="accumulation_steps"):
        nested_accumulate_cadence(0, 2)


def test_new_options_enter_the_run_fingerprint_only_when_set():
    """Runs from before --loss-divisor / --ref-precision keep their fingerprint (and resume)."""
    import hashlib
    import json
    from dataclasses import asdict

    from training.config import TrainConfig

    plain = TrainConfig()
    before = {k: v for k, v in asdict(plain).items()
              if k not in TrainConfig.NON_TRAJECTORY + ("standardize_ridge", "loss_divisor", "ref_precision",
                                                                 "crop_rounding")}
    assert plain.run_fingerprint() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert TrainConfig(loss_divisor=8).run_fingerprint() != plain.run_fingerprint()
    assert TrainConfig(ref_precision="bf16").run_fingerprint() != plain.run_fingerprint()
    assert (TrainConfig(grad_accum=4).effective_loss_divisor(), TrainConfig(grad_accum=4, loss_divisor=8)
            .effective_loss_divisor()) == (4, 8)


def test_reference_crop_rounding_is_torchvisions(tmp_path):
    """A 203 × 100 image at 64 px: torchvision's Resize(64) truncates 129.92 to 129 and its
    CenterCrop rounds the offset 32.5 to 32 (Python's round); the pack rounds to 130 and floors 33."""
    import numpy as np
    from PIL import Image

    from training.data import load_image, resize_and_crop_box

    assert resize_and_crop_box(203, 100, 64, "reference") == ((129, 64), (32, 0))
    assert resize_and_crop_box(203, 100, 64, "pack") == ((130, 64), (33, 0))
    assert resize_and_crop_box(100, 100, 64, "reference") == resize_and_crop_box(100, 100, 64, "pack")
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (100, 203, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as im:
        by_hand = np.asarray(im.resize((129, 64), Image.BILINEAR).crop((32, 0, 96, 64)), dtype=np.float32) / 255.0
    ours = load_image(path, 64, resize_filter="bilinear", crop_rounding="reference")
    assert np.array_equal(ours.numpy(), by_hand)
    assert not np.array_equal(load_image(path, 64, resize_filter="bilinear").numpy(), by_hand)


def test_training_reads_every_embedding_shape_the_nodes_read(tmp_path):
    """(E,), (1, E) and (1, 1, E) files load alike in training, as in the profile loader."""
    import numpy as np

    from training.data import DataValidationError, load_embedding

    vec = np.arange(1, 9, dtype=np.float32)
    for shape in ((8,), (1, 8), (1, 1, 8)):
        np.save(tmp_path / "u.npy", vec.reshape(shape))
        assert load_embedding(tmp_path / "u.npy").tolist() == vec.tolist(), shape
    np.save(tmp_path / "two.npy", np.ones((2, 8), dtype=np.float32))
    with pytest.raises(DataValidationError, match=r"\(E,\), \(1, E\) or \(1, 1, E\)"):
        load_embedding(tmp_path / "two.npy")
