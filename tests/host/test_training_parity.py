"""Training parity with the reference (docs/reference-parity.md): literal, truncated captions,
mixed caption lengths in one batch, the bounded conditioning cache, the recipes, VAE posterior
sampling, independent flips, the bf16 user projection and the per-branch training log
(SD1.5 tiny fixture; the SDXL caption checks are in test_training_sdxl.py)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from support.training_helpers import small_config, trainer_for

PARENS = r"a (red:1.5) cat, [blurry] \(sketch\) embedding:foo"
LONG = " ".join(["cat"] * 200)  # 200 tokens: three 77-token windows


def _hf_ids(sub, caption: str, pad: int) -> list[int]:
    """The reference's tokenisation: HF truncation at 77 with max-length padding."""
    ids = sub.tokenizer(caption, max_length=77, truncation=True)["input_ids"]
    return ids + [pad] * (77 - len(ids))


def test_captions_are_tokenised_literally_and_truncated_like_the_reference(base):
    from training.text import caption_windows, literal_tokens

    sub = base.clip.tokenizer.clip_l
    for caption in (PARENS, LONG, ""):
        windows = caption_windows(sub, caption, "truncate")
        assert windows == [_hf_ids(sub, caption, sub.tokenizer.eos_token_id)], caption
    # the weighting syntax stays text: decoding the window gives the caption's own characters back
    decoded = sub.tokenizer.decode(caption_windows(sub, PARENS, "truncate")[0], skip_special_tokens=True)
    assert decoded.replace(" ", "") == PARENS.lower().replace(" ", "")
    parser = base.clip.tokenize(PARENS)["l"][0]  # ComfyUI's prompt parser reads "(red:1.5)" as a weight
    assert any(w != 1.0 for _, w in parser)
    assert all(w == 1.0 for _, w in literal_tokens(base.clip, PARENS)["l"][0])
    chunked = caption_windows(sub, LONG, "chunk")
    assert len(chunked) == math.ceil((len(sub.tokenizer(LONG)["input_ids"]) - 2) / 75) == 3
    assert all(len(w) == 77 and w[0] == sub.start_token for w in chunked)


def test_truncated_captions_ignore_the_tail_and_chunked_ones_keep_it(base):
    from training.text import TextEncoder

    other_tail = LONG.rsplit(" ", 5)[0] + " completely different ending here"
    trunc = TextEncoder(base, 64, "truncate")
    a, b = trunc.encode(LONG)["c_crossattn"], trunc.encode(other_tail)["c_crossattn"]
    assert a.shape == (1, 77, 768) and torch.equal(a, b)
    chunk = TextEncoder(base, 64, "chunk")
    a, b = chunk.encode(LONG)["c_crossattn"], chunk.encode(other_tail)["c_crossattn"]
    assert a.shape == (1, 3 * 77, 768) and not torch.equal(a, b)


def test_mixed_caption_lengths_batch_and_repetition_leaves_the_unet_unchanged(base):
    from psa_model.adapter.patch import UserConditioning
    from training.model import predict_eps
    from training.text import TextEncoder

    enc = TextEncoder(base, 64, "chunk")
    batch = enc.batch([PARENS, LONG, ""])
    assert batch["c_crossattn"].shape == (3, 3 * 77, 768)
    short = enc.encode(PARENS)["c_crossattn"]
    assert torch.equal(batch["c_crossattn"][0:1], short.repeat(1, 3, 1))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0])
    one = predict_eps(base.model, x, sigma, {"c_crossattn": short}, UserConditioning.off())
    four = predict_eps(base.model, x, sigma, {"c_crossattn": batch["c_crossattn"][0:1]}, UserConditioning.off())
    assert (one - four).abs().max().item() <= 1e-5


def test_conditioning_cache_is_bounded(base):
    from training.text import TextEncoder

    per_caption = 77 * 768 * 4  # SD1.5: one 77×768 float32 conditioning
    enc = TextEncoder(base, 64, "truncate", cache_bytes=2 * per_caption + 100)
    for i in range(5):
        enc.encode(f"caption number {i}")
    stats = enc.cache.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 2 * per_caption <= stats["max_bytes"]
    enc.encode("caption number 4")  # most recent: still cached
    enc.encode("caption number 0")  # evicted: encoded again
    assert enc.cache.hits == 1 and enc.cache.misses == 6
    off = TextEncoder(base, 64, "truncate", cache_bytes=0)
    off.encode("x")
    assert len(off.cache) == 0 and off.cache.bytes == 0


def test_a_batch_with_parentheses_and_long_captions_trains_in_both_modes(base, data, fixture_paths, tmp_path):
    import shutil

    root = tmp_path / "captions"
    shutil.copytree(data["train"].parent, root)
    meta = root / "train" / "metadata.jsonl"
    records = [json.loads(line) for line in meta.read_text().splitlines()]
    for i, rec in enumerate(records):
        rec["caption"] = [PARENS, LONG, "plain caption"][i % 3]
    meta.write_text("".join(json.dumps(r) + "\n" for r in records))
    data2 = {"train": root / "train", "val": root / "val", "embeddings": root / "embeddings"}
    for mode in ("truncate", "chunk"):
        cfg = small_config(data2, tmp_path / mode, fixture_paths["sd15_tiny.safetensors"], batch_size=3,
                           caption_dropout=0.0, caption_mode=mode, latent_cache="")
        tr = trainer_for(cfg, base)
        pairs = [p for p in tr.train_set.pairs][:3]
        assert {p.caption for p in pairs} == {PARENS, LONG, "plain caption"}
        inputs = tr.batch_inputs(tr.train_set, pairs, torch.Generator().manual_seed(0), augment=True)
        assert inputs["conds"]["c_crossattn"].shape[1] == (77 if mode == "truncate" else 3 * 77)
        record = tr.train_step()
        assert math.isfinite(record["loss"])


def _resolve(root, *extra):
    """The CLI's config for ``extra`` with real (empty) input paths under ``root`` (the CLI checks them)."""
    from training.config import resolve_config

    (root / "c.safetensors").touch()
    (root / "t").mkdir(exist_ok=True)
    (root / "t" / "metadata.jsonl").touch()
    (root / "e").mkdir(exist_ok=True)
    return resolve_config(["--checkpoint", str(root / "c.safetensors"), "--train-data", str(root / "t"),
                           "--embeddings", str(root / "e"), "--output-dir", str(root / "o"), *extra])


def test_bf16_vae_precision_encodes_as_comfyuis_own_bf16_vae(base, data, fixture_paths, tmp_path):
    """--vae-precision bf16 = the reference's VAE cast to bf16: checked against a VAE that ComfyUI
    itself builds in bf16 from the checkpoint's weights; the loaded VAE keeps its dtype."""
    import comfy.sd
    import comfy.utils
    from training.data import load_image
    from training.latents import LatentSource

    images = sorted(data["train"].glob("*.png"))[:2]
    pixels = torch.stack([load_image(p, 64) for p in images])
    weights = comfy.utils.load_torch_file(str(fixture_paths["sd15_tiny.safetensors"]))
    prefix = "first_stage_model."
    comfy_bf16 = comfy.sd.VAE(sd={k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)},
                              dtype=torch.bfloat16)
    expected = base.model.model.process_latent_in(comfy_bf16.encode(pixels).float())
    dtype_before = base.vae.vae_dtype

    bf16 = LatentSource(base.vae, base.model, 64, tmp_path / "cache", vae_identity="tiny", vae_precision="bf16")
    mean, std = bf16.get_moments(images, [False, False])
    torch.testing.assert_close(mean, expected, rtol=0, atol=1e-6)
    assert (std > 0).all()
    fp32_mean, _ = LatentSource(base.vae, base.model, 64, tmp_path / "cache", vae_identity="tiny").get_moments(
        images, [False, False])
    assert (mean - fp32_mean).abs().max().item() > 1e-4  # bf16 rounding shows: the cache kept them apart
    assert base.vae.vae_dtype == dtype_before == next(base.vae.first_stage_model.parameters()).dtype


def test_reference_recipes_set_the_reference_values_and_explicit_options_win(tmp_path):
    sd15 = _resolve(tmp_path, "--recipe", "reference-sd15")
    expected = dict(resolution=512, batch_size=6, grad_accum=4, loss_divisor=8, ref_precision="bf16", max_steps=5000,
                    lr=5e-6, warmup_steps=500, optimizer="adamw", weight_decay=1e-2, max_grad_norm=1.0, beta=5000.0,
                    precision="bf16", projection_dtype="bf16", latent_sampling="sample", random_flip=True,
                    independent_flips=True, caption_dropout=0.2, caption_mode="truncate", resize_filter="bilinear",
                    crop_rounding="reference", min_timestep=0, max_timestep=1000, gradient_checkpointing=False,
                    epoch_end_step=True, embedding_dtype="fp16", vae_precision="bf16")
    assert {k: getattr(sd15, k) for k in expected} == expected
    sdxl = _resolve(tmp_path, "--recipe", "reference-sdxl")
    expected.update(resolution=1024, batch_size=2, grad_accum=8, loss_divisor=16, optimizer="adafactor",
                    caption_dropout=0.36,
                    gradient_checkpointing=True)
    assert {k: getattr(sdxl, k) for k in expected} == expected
    pack = _resolve(tmp_path)
    assert (pack.recipe, pack.projection_dtype, pack.latent_sampling, pack.independent_flips,
            pack.resolution, pack.effective_loss_divisor(), pack.ref_precision, pack.epoch_end_step,
            pack.embedding_dtype, pack.vae_precision) == ("pack", "fp32", "mean", False, 0, 1, "policy", False, "fp32",
                                                          "auto")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"recipe": "reference-sdxl", "batch_size": 1, "lr": 1e-5}))
    mixed = _resolve(tmp_path, "--config", str(config), "--lr", "2e-5", "--no-independent-flips")
    assert (mixed.recipe, mixed.batch_size, mixed.lr, mixed.independent_flips, mixed.grad_accum) == \
        ("reference-sdxl", 1, 2e-5, False, 8)


def test_a_recipe_for_the_other_architecture_is_refused(base, data, fixture_paths, tmp_path):
    from training.model import ModelMismatchError

    cfg = small_config(data, tmp_path, fixture_paths["sd15_tiny.safetensors"], recipe="reference-sdxl")
    with pytest.raises(ModelMismatchError, match="reference-sd15"):
        trainer_for(cfg, base)


def test_posterior_mean_is_comfyuis_encode_and_sampling_draws_around_it(base, data, fixture_paths, tmp_path):
    from training.data import load_image
    from training.latents import LatentSource

    images = sorted(data["train"].glob("*.png"))[:2]
    src = LatentSource(base.vae, base.model, 64, tmp_path / "cache", vae_identity="tiny")
    mean, std = src.get_moments(images, [False, True])
    pixels = torch.stack([load_image(images[0], 64), load_image(images[1], 64, flip=True)])
    comfy_mean = base.model.model.process_latent_in(base.vae.encode(pixels).float())
    assert (mean - comfy_mean).abs().max().item() <= 1e-5
    assert (std > 0).all()
    again = LatentSource(base.vae, base.model, 64, tmp_path / "cache", vae_identity="tiny")
    mean2, std2 = again.get_moments(images, [False, True])  # the cache keeps the standard deviation
    assert again.encoded == 0 and torch.equal(mean, mean2) and torch.equal(std, std2)

    ckpt = fixture_paths["sd15_tiny.safetensors"]
    common = dict(batch_size=4, random_flip=False, caption_dropout=0.0)
    det = trainer_for(small_config(data, tmp_path / "mean", ckpt, **common), base)
    smp = trainer_for(small_config(data, tmp_path / "sample", ckpt, latent_sampling="sample", **common), base)
    pairs = det.train_set.pairs[:4]
    a = det.batch_inputs(det.train_set, pairs, torch.Generator().manual_seed(5), augment=True)
    b = smp.batch_inputs(smp.train_set, pairs, torch.Generator().manual_seed(5), augment=True)
    c = smp.batch_inputs(smp.train_set, pairs, torch.Generator().manual_seed(6), augment=True)
    assert torch.equal(a["noise"], b["noise"]) and torch.equal(a["sigma"], b["sigma"])
    m_c, s_c = det.latents.get_moments([p.chosen for p in pairs], [False] * 4)
    m_r, s_r = det.latents.get_moments([p.rejected for p in pairs], [False] * 4)
    z = (b["x_noisy"] - a["x_noisy"]) / torch.cat([s_c, s_r])  # the standardised posterior draw
    assert 0.8 < z.std().item() < 1.2 and abs(z.mean().item()) < 0.15
    assert not torch.equal(b["x_noisy"], smp.batch_inputs(smp.train_set, pairs, torch.Generator().manual_seed(5),
                                                          augment=False)["x_noisy"])
    assert not torch.allclose(b["x_noisy"] - b["noise"] * b["sigma"].reshape(-1, 1, 1, 1),
                              c["x_noisy"] - c["noise"] * c["sigma"].reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("independent", [False, True])
def test_chosen_and_rejected_flips(base, data, fixture_paths, tmp_path, independent):
    tr = trainer_for(small_config(data, tmp_path, fixture_paths["sd15_tiny.safetensors"], batch_size=8,
                               independent_flips=independent), base)
    calls = []
    original = tr.latents.get_moments

    def spy(paths, flips):
        calls.append(list(flips))
        return original(paths, flips)

    tr.latents.get_moments = spy
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        tr.batch_inputs(tr.train_set, tr.train_set.pairs[:8], gen, augment=True)
    chosen, rejected = calls[0::2], calls[1::2]
    flat_c, flat_r = sum(chosen, []), sum(rejected, [])
    assert any(flat_c) and not all(flat_c)  # flips happen
    differ = sum(x != y for x, y in zip(flat_c, flat_r))
    assert (differ > 0) if independent else (differ == 0)


def test_bf16_projection_barely_moves_and_fp32_learns(base, data, fixture_paths, tmp_path):
    ckpt = fixture_paths["sd15_tiny.safetensors"]
    moved = {}
    for dtype in ("fp32", "bf16"):
        tr = trainer_for(small_config(data, tmp_path / dtype, ckpt, projection_dtype=dtype, lr=5e-6, max_steps=3,
                                   batch_size=2), base)
        before = tr.adapter.user_proj.proj.weight.detach().clone()
        assert before.dtype == (torch.bfloat16 if dtype == "bf16" else torch.float32)
        tr.train()
        after = tr.adapter.user_proj.proj.weight.detach()
        moved[dtype] = (after != before).float().mean().item()
        assert any(p.abs().max() > 0 for n, p in tr.adapter.named_parameters() if "to_v_user" in n)
    assert moved["fp32"] > 0.9 and moved["bf16"] < 0.2, moved
    from psa_model.formats.adapter_file import load_adapter

    loaded = load_adapter(tmp_path / "bf16" / "psa_adapter.safetensors")  # a bf16 projection loads in the nodes
    assert torch.equal(loaded.user_proj.proj.weight.float(), after.float())


def test_fp16_embeddings_reach_the_bf16_projection_as_the_references_do(base, data, fixture_paths, tmp_path):
    """docs/reference-parity.md, "The user embedding": the reference's data set rounds embeddings to
    fp16 and its bf16 projection rounds them again; rounding once to bf16 gives other numbers."""
    import numpy as np

    ckpt = fixture_paths["sd15_tiny.safetensors"]
    tr = trainer_for(small_config(data, tmp_path / "r", ckpt, embedding_dtype="fp16", projection_dtype="bf16"), base)
    plain = trainer_for(small_config(data, tmp_path / "p", ckpt, projection_dtype="bf16"), base)
    pairs = tr.train_set.pairs[:3]
    files = [np.load(Path(data["embeddings"]) / f"{p.user_id}.npy").reshape(-1) for p in pairs]
    reference_input = torch.from_numpy(np.stack(files).astype(np.float16)).to(torch.bfloat16)
    ours = tr._embeddings(tr.train_set, pairs)
    assert torch.equal(ours.to(torch.bfloat16), reference_input)
    once = plain._embeddings(plain.train_set, pairs).to(torch.bfloat16)
    assert not torch.equal(once, reference_input)  # double rounding differs from rounding once
    seen = []
    tr.adapter.user_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    tr.adapter.project(ours)
    assert seen[0].dtype == torch.bfloat16 and torch.equal(seen[0], reference_input)


def test_log_and_plot_record_policy_and_reference_errors(base, data, fixture_paths, tmp_path):
    cfg = small_config(data, tmp_path, fixture_paths["sd15_tiny.safetensors"], batch_size=1, max_steps=3,
                       validate_every=3, lr=1e-2)
    tr = trainer_for(cfg, base)
    tr.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = ("policy_mse_chosen", "policy_mse_rejected", "ref_mse_chosen", "ref_mse_rejected")
    assert [r["kind"] for r in records] == ["train", "train", "train", "val"]
    for r in records:
        assert all(r[k] > 0 for k in keys)
    for r in records[:3]:  # batch 1: the loss is −log σ(−β/2 ((pc − pr) − (rc − rr))) of the logged errors
        inside = -0.5 * 5000.0 * ((r["policy_mse_chosen"] - r["policy_mse_rejected"])
                                  - (r["ref_mse_chosen"] - r["ref_mse_rejected"]))
        expected = math.log1p(math.exp(-inside)) if inside > -30 else -inside
        assert abs(r["loss"] - expected) <= 1e-2 + 1e-3 * abs(expected), r
    assert records[2]["policy_mse_chosen"] != records[2]["ref_mse_chosen"]  # the policy moved off the reference
    with Image.open(tmp_path / "training_plot.png") as im:
        assert im.width >= 1100  # three panels: loss, accuracy, per-branch error


def test_training_subset_noise_offset_and_input_perturbation(base, data, fixture_paths, tmp_path):
    from training.data import random_subset

    ckpt = fixture_paths["sd15_tiny.safetensors"]
    tr = trainer_for(small_config(data, tmp_path, ckpt, train_subset=5, train_subset_seed=7), base)
    full = trainer_for(small_config(data, tmp_path / "full", ckpt), base)
    assert len(tr.train_set) == 5 and set(tr.train_set.pairs) < set(full.train_set.pairs)
    assert random_subset(full.train_set.pairs, 5, 7) == tr.train_set.pairs
    assert random_subset(full.train_set.pairs, 5, 8) != tr.train_set.pairs
    pairs = full.train_set.pairs[:2]
    plain = full.batch_inputs(full.train_set, pairs, torch.Generator().manual_seed(3), augment=True)
    pert = trainer_for(small_config(data, tmp_path / "p", ckpt, input_perturbation=0.1), base)
    p = pert.batch_inputs(pert.train_set, pairs, torch.Generator().manual_seed(3), augment=True)
    assert torch.equal(p["noise"], plain["noise"]) and not torch.equal(p["x_noisy"], plain["x_noisy"])
    off = trainer_for(small_config(data, tmp_path / "o", ckpt, noise_offset=0.1), base)
    o = off.batch_inputs(off.train_set, pairs, torch.Generator().manual_seed(3), augment=True)
    shift = o["noise"] - plain["noise"]  # a constant per image and channel, shared by chosen and rejected
    assert shift.abs().max() > 0 and torch.allclose(shift, shift.mean(dim=(2, 3), keepdim=True), atol=1e-6)
    assert torch.equal(shift[:2], shift[2:])


def test_literal_text_encode_node_encodes_prompts_as_training_reads_captions(base):
    """PSA Text Encode (literal) (docs/reference-parity.md, "Prompts at inference") gives the
    training-side conditioning of the same text; the stock encoder reads weights and keeps the tail."""
    from devkit.pack_loader import node_class
    from training.text import TextEncoder

    node = node_class("PSATextEncodeLiteral")
    training = TextEncoder(base, 64, "truncate")
    for text in (PARENS, LONG, ""):
        ((cond, extra),) = node.execute(text=text, clip=base.clip, mode="truncate")[0]
        assert torch.equal(cond, training.encode(text)["c_crossattn"].to(cond.dtype)), text
        assert "pooled_output" in extra
    ((chunked, _),) = node.execute(text=LONG, clip=base.clip, mode="chunk")[0]
    assert torch.equal(chunked, TextEncoder(base, 64, "chunk").encode(LONG)["c_crossattn"].to(chunked.dtype))
    stock = base.clip.encode_from_tokens(base.clip.tokenize(PARENS))
    assert not torch.equal(stock, training.encode(PARENS)["c_crossattn"].to(stock.dtype))  # "(red:1.5)" weighted
    assert base.clip.encode_from_tokens(base.clip.tokenize(LONG)).shape[1] == 3 * 77


def test_epoch_end_step_ends_each_epoch_with_the_micro_batches_left(base, data, fixture_paths, tmp_path):
    """docs/reference-parity.md, "Gradient accumulation as the reference runs it": epochs of
    ⌊7 pairs / 1⌋ = 7 micro-batches at 3 per step give steps of 3, 3, 1, and a resumed run
    continues inside the epoch."""
    ckpt = fixture_paths["sd15_tiny.safetensors"]

    def sizes(trainer, steps: int) -> tuple[list[int], list[list]]:
        drawn, counts, draw = [], [], trainer._next_pairs

        def spy():
            drawn.append(draw())
            return drawn[-1]

        trainer._next_pairs = spy
        for _ in range(steps):
            before = len(drawn)
            trainer.train_step()
            counts.append(len(drawn) - before)
        return counts, drawn

    common = dict(train_subset=7, batch_size=1, grad_accum=3, loss_divisor=6)
    epochs = trainer_for(small_config(data, tmp_path / "e", ckpt, epoch_end_step=True, **common), base)
    counts, drawn = sizes(epochs, 6)
    assert counts == [3, 3, 1, 3, 3, 1]
    first, second = drawn[:7], drawn[7:]
    assert len({p for batch in first for p in batch}) == 7 == len({p for batch in second for p in batch})
    assert first != second  # each epoch is a new permutation
    stream = trainer_for(small_config(data, tmp_path / "s", ckpt, **common), base)
    assert sizes(stream, 3)[0] == [3, 3, 3]

    run = trainer_for(small_config(data, tmp_path / "r", ckpt, epoch_end_step=True, max_steps=2, checkpoint_every=2,
                                   **common), base)
    run.train()
    resumed = trainer_for(small_config(data, tmp_path / "r", ckpt, epoch_end_step=True, max_steps=4,
                                       resume=str(tmp_path / "r" / "checkpoints" / "step_2"), **common), base)
    assert sizes(resumed, 2)[0] == [1, 3]
