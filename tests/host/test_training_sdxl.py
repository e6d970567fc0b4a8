"""SDXL training through ComfyUI's code: both text encoders, pooled output and size conditioning
reach the UNet exactly as on the node sampling path (the full tiny SDXL checkpoint)."""
from __future__ import annotations

import pytest
import torch

from psa_model.adapter.modules import adapter_config_for_model
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import attach_adapter, attach_profile
from support.training_helpers import make_dataset, small_config


@pytest.fixture(scope="module")
def sdxl(comfy_host):
    from devkit.fixtures import ensure_fixtures
    from training.model import load_base

    from conftest import FIXTURE_DIR

    checkpoint = ensure_fixtures(FIXTURE_DIR, sdxl_checkpoint=True)["sdxl_tiny.safetensors"]
    return checkpoint, load_base(checkpoint)


def test_sdxl_train_and_infer_predictions_agree(sdxl, tmp_path):
    import comfy.sample

    from training.trainer import Trainer

    checkpoint, base = sdxl
    assert base.arch == "sdxl"
    data = make_dataset(tmp_path / "data")
    trainer = Trainer(small_config(data, tmp_path / "out", checkpoint, optimizer="adafactor"), base=base)
    sites = match_sites(architecture("sdxl"), base.model.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sdxl", sites, embed_dim=64), seed=1, kv_std=0.05)
    trainer.adapter.load_state_dict(adapter.state_dict())
    caption = "a picture about violence, number 0"
    cond, pooled = base.clip.encode_from_tokens(base.clip.tokenize(caption), return_pooled=True)
    emb = random_embeddings(2, 64, seed=4)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9))

    recorded = {}

    def record(args):
        recorded.update(x=args["input"].clone(), sigma=args["sigma"].clone(),
                        eps=(args["input"] - args["conds_out"][0]) / args["sigma"].reshape(-1, 1, 1, 1))
        return args["conds_out"]

    node_model = attach_profile(attach_adapter(base.model, adapter), emb).clone()
    node_model.set_model_sampler_pre_cfg_function(record)
    positive = [[cond, {"pooled_output": pooled}]]  # what CLIPTextEncode gives; width/height from the latent
    comfy.sample.sample(node_model, noise, 1, 1.0, "euler", "normal", positive, positive, torch.zeros_like(noise),
                        denoise=0.6, disable_pbar=True, seed=0)
    inputs = {"x_noisy": recorded["x"], "sigma": recorded["sigma"], "conds": trainer.text.batch([caption] * 2),
              "embeddings": emb}
    eps_train, eps_ref = trainer.predictions(inputs, grad=True)
    assert set(inputs["conds"]) == {"c_crossattn", "y"} and inputs["conds"]["y"].shape == (2, 2816)
    assert (eps_train.detach() - recorded["eps"]).abs().max().item() <= 1e-5
    assert (eps_train.detach() - eps_ref).abs().max().item() > 1e-4  # the adapter acts
    record_step = trainer.train_step()  # one Adafactor step runs end to end
    assert record_step["step"] == 1 and record_step["loss"] == record_step["loss"]


PARENS = r"a (red:1.5) cat, [blurry] \(sketch\)"
LONG = " ".join(["cat"] * 200)  # three 77-token windows


def test_sdxl_captions_are_literal_truncated_and_batch_with_mixed_lengths(sdxl, tmp_path):
    """Both SDXL tokenizers read captions literally and truncate like the reference's
    (CLIP-G pads with 0, CLIP-L with its end token); chunked captions of different lengths batch."""
    from training.text import TextEncoder, caption_windows
    from training.trainer import Trainer

    checkpoint, base = sdxl
    for key, pad in (("g", 0), ("l", None)):
        sub = getattr(base.clip.tokenizer, f"clip_{key}")
        pad = sub.tokenizer.eos_token_id if pad is None else pad
        for caption in (PARENS, LONG):
            ids = sub.tokenizer(caption, max_length=77, truncation=True)["input_ids"]
            assert caption_windows(sub, caption, "truncate") == [ids + [pad] * (77 - len(ids))], (key, caption)
    trunc = TextEncoder(base, 64, "truncate").batch([PARENS, LONG])
    assert trunc["c_crossattn"].shape == (2, 77, 2048) and trunc["y"].shape == (2, 2816)
    chunk_enc = TextEncoder(base, 64, "chunk")
    chunk = chunk_enc.batch([PARENS, LONG])
    assert chunk["c_crossattn"].shape == (2, 3 * 77, 2048)
    assert torch.equal(chunk["c_crossattn"][0:1], chunk_enc.encode(PARENS)["c_crossattn"].repeat(1, 3, 1))
    assert chunk_enc.cache.bytes == 2 * (77 * 2048 * 4 + 2816 * 4) + 2 * 77 * 2048 * 4  # 1 + 3 windows

    data = make_dataset(tmp_path / "data")
    meta = data["train"] / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    import json

    records = [json.loads(line) for line in lines]
    for i, rec in enumerate(records):
        rec["caption"] = (PARENS, LONG)[i % 2]
    meta.write_text("".join(json.dumps(r) + "\n" for r in records))
    for mode in ("truncate", "chunk"):
        trainer = Trainer(small_config(data, tmp_path / mode, checkpoint, caption_mode=mode, caption_dropout=0.0,
                                       latent_cache=""), base=base)
        record = trainer.train_step()
        assert record["step"] == 1 and record["loss"] == record["loss"]


def test_literal_text_encode_node_gives_both_encoders_and_the_pooled_output_as_training(sdxl):
    """PSA Text Encode (literal) on SDXL: the penultimate states of both encoders (2048 wide) and
    CLIP-G's pooled output, equal to the training side's conditioning of the same text (its ``y``
    is the pooled output with the size ids)."""
    from devkit.pack_loader import node_class
    from training.text import TextEncoder

    _, base = sdxl
    training = TextEncoder(base, 1024, "truncate")
    for text in (PARENS, LONG):
        ((cond, extra),) = node_class("PSATextEncodeLiteral").execute(text=text, clip=base.clip, mode="truncate")[0]
        expected = training.encode(text)
        assert cond.shape == (1, 77, 2048)
        assert torch.equal(cond, expected["c_crossattn"].to(cond.dtype)), text
        y = base.model.model.encode_adm(pooled_output=extra["pooled_output"], width=1024, height=1024, crop_w=0,
                                        crop_h=0, target_width=1024, target_height=1024, device=torch.device("cpu"))
        assert torch.equal(y.float(), expected["y"]), text


def test_reference_sdxl_recipe_runs_a_step(sdxl, tmp_path):
    """The reference-sdxl recipe (Adafactor, bf16 autocast and projection, posterior samples,
    independent flips, 0.36 dropout) trains on SDXL, shrunk to the fixture's size."""
    from training.config import config_with_recipe
    from training.trainer import Trainer

    checkpoint, base = sdxl
    data = make_dataset(tmp_path / "data")
    cfg = config_with_recipe({"recipe": "reference-sdxl", "checkpoint": str(checkpoint),
                              "train_data": str(data["train"]), "embeddings": str(data["embeddings"]),
                              "output_dir": str(tmp_path / "out"),
                              "resolution": 64, "batch_size": 1, "grad_accum": 1, "max_steps": 1,
                              "checkpoint_every": 0, "progress": False})
    assert (cfg.optimizer, cfg.precision, cfg.projection_dtype, cfg.latent_sampling) == \
        ("adafactor", "bf16", "bf16", "sample")
    trainer = Trainer(cfg, base=base)
    assert trainer.adapter.user_proj.proj.weight.dtype == torch.bfloat16
    record = trainer.train_step()
    assert record["loss"] == record["loss"] and record["policy_mse_chosen"] > 0
