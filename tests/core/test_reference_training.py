"""Reference-recipe training mechanics on toy inputs (docs/reference-parity.md, "Gradient
accumulation as the reference runs it", "Data and images"). No ComfyUI import.

The reference enters ``accelerator.accumulate(unet)`` and ``accelerator.accumulate(user_proj)``
for every micro-batch. ``_Accelerate033`` below re-implements, from accelerate 0.33.0's source,
the parts of ``Accelerator`` that loop touches on one process: ``accumulate`` (``_do_sync``:
counter + 1, sync when it is a multiple of ``gradient_accumulation_steps``; on the data loader's
last batch instead counter = 0 and sync), ``backward`` (loss divided by
``gradient_accumulation_steps``) and the optimiser wrapper (``step`` and ``zero_grad`` do
nothing unless gradients are synced). ``_end_flagging`` is its data loader's look-ahead, which
raises the end-of-data flag before yielding the last batch.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

from training.accumulation import accumulate_gradients, nested_accumulate_cadence, step_micro_batches
from training.data import DataValidationError
from training.epochs import PairOrder
from training.recipes import RECIPES


class _Accelerate033:
    def __init__(self, gradient_accumulation_steps: int) -> None:
        self.num_steps = gradient_accumulation_steps
        self.step = 0
        self.sync_gradients = False
        self.end_of_dataloader = False  # set by the data loader (sync_with_dataloader is on by default)

    @contextlib.contextmanager
    def accumulate(self, _model):
        if self.end_of_dataloader:
            self.step = 0
            self.sync_gradients = True
        else:
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
                                                                 "crop_rounding", "epoch_end_step",
                                                                 "embedding_dtype", "vae_precision")}
    assert plain.run_fingerprint() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert TrainConfig(loss_divisor=8).run_fingerprint() != plain.run_fingerprint()
    assert TrainConfig(ref_precision="bf16").run_fingerprint() != plain.run_fingerprint()
    assert TrainConfig(epoch_end_step=True).run_fingerprint() != plain.run_fingerprint()
    assert TrainConfig(embedding_dtype="fp16").run_fingerprint() != plain.run_fingerprint()
    assert TrainConfig(vae_precision="bf16").run_fingerprint() != plain.run_fingerprint()
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


# -- epochs: accelerate's end-of-data step -------------------------------------------------------

_PAIRS, _BATCH, _EPOCHS = 23, 2, 3  # 11 micro-batches an epoch (one pair left out): not a multiple of 4 or 8


class _EpochSampler(torch.utils.data.Sampler):
    """``shuffle=True``: a fresh permutation of the data set each epoch, from one generator."""

    def __init__(self, gen: torch.Generator) -> None:
        self.gen = gen

    def __len__(self) -> int:
        return _PAIRS

    def __iter__(self):
        return iter(torch.randperm(_PAIRS, generator=self.gen).tolist())


def _end_flagging(loader, acc: _Accelerate033):
    """Yield the loader's batches, one ahead, with ``acc.end_of_dataloader`` raised for the last."""
    acc.end_of_dataloader = False
    batches = iter(loader)
    current = next(batches)
    for upcoming in batches:
        yield current
        current = upcoming
    acc.end_of_dataloader = True
    yield current


def _epoch_data():
    torch.manual_seed(1)
    return torch.randn(_PAIRS, 4), torch.randn(_PAIRS, 1)


def _reference_epochs_loop(accumulation_steps: int):
    """The reference's epoch loop: a drop_last DataLoader, two nested contexts per batch."""
    model, _ = _toy()
    xs, ys = _epoch_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    acc = _Accelerate033(accumulation_steps)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=_BATCH, drop_last=True,
                                         sampler=_EpochSampler(torch.Generator().manual_seed(5)))
    seen, sizes, pending = [], [], 0
    for _ in range(_EPOCHS):
        for batch in _end_flagging(loader, acc):
            with acc.accumulate(model[0]), acc.accumulate(model[2]):
                acc.backward(_loss(model, batch))
                pending += 1
                if acc.sync_gradients:
                    seen.append(_grads(model))
                    sizes.append(pending)
                    pending = 0
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad()
    assert pending == 0
    return seen, sizes, torch.cat([p.detach().flatten() for p in model.parameters()])


def _pack_epochs_loop(micro_batches: int, loss_divisor: int, steps: int, epochs: bool):
    """The trainer's step: micro-batch count from the epoch position, pairs from PairOrder."""
    model, _ = _toy()
    xs, ys = _epoch_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    order, gen = PairOrder(_PAIRS, _BATCH, epochs=epochs), torch.Generator().manual_seed(5)

    def micro_step():
        rows = order.next_batch(gen)
        return _loss(model, (xs[rows], ys[rows]))

    seen, sizes = [], []
    for _ in range(steps):
        opt.zero_grad()
        n = step_micro_batches(micro_batches, order.epoch_length, order.position)
        accumulate_gradients(micro_step, n, loss_divisor)
        seen.append(_grads(model))
        sizes.append(n)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return seen, sizes, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("recipe, accumulation_steps, per_epoch", [("reference-sd15", 8, [4, 4, 3]),
                                                                    ("reference-sdxl", 16, [8, 3])])
def test_epoch_end_steps_like_accelerates_end_of_dataloader(recipe, accumulation_steps, per_epoch):
    values = RECIPES[recipe]
    assert values["epoch_end_step"] is True
    reference_grads, reference_sizes, reference_params = _reference_epochs_loop(accumulation_steps)
    assert reference_sizes == per_epoch * _EPOCHS  # the counter restarts each epoch, after a short step
    pack_grads, pack_sizes, pack_params = _pack_epochs_loop(values["grad_accum"], values["loss_divisor"],
                                                            len(reference_grads), epochs=True)
    assert pack_sizes == reference_sizes
    for ref, ours in zip(reference_grads, pack_grads):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(pack_params, reference_params, rtol=1e-6, atol=1e-7)
    # one continuous stream (the option off) takes other steps and ends elsewhere
    stream_grads, stream_sizes, stream_params = _pack_epochs_loop(values["grad_accum"], values["loss_divisor"],
                                                                  len(reference_grads), epochs=False)
    assert stream_sizes != reference_sizes and not torch.allclose(stream_params, reference_params)


def test_pair_order_epochs_drop_the_remainder_and_reshuffle():
    gen = torch.Generator().manual_seed(0)
    order = PairOrder(7, 3, epochs=True)  # 2 micro-batches an epoch, one pair left out each time
    assert (order.epoch_length, order.position) == (2, 0)
    first = order.next_batch(gen) + order.next_batch(gen)
    assert order.position == 0 and len(set(first)) == 6
    second = order.next_batch(gen)
    assert order.position == 1 and second != first[:3]
    stream = PairOrder(7, 3, epochs=False)
    drawn = [i for _ in range(7) for i in stream.next_batch(gen)]
    assert stream.epoch_length == stream.position == 0 and len(drawn) == 21
    assert step_micro_batches(4, 0, 5) == 4 and step_micro_batches(4, 11, 8) == 3 and step_micro_batches(4, 11, 11) == 4
    with pytest.raises(DataValidationError, match="--epoch-end-step"):
        PairOrder(5, 6, epochs=True)
