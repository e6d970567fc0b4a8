"""SDXL training through ComfyUI's code: both text encoders, pooled output and size conditioning
reach the UNet exactly as on the node sampling path (the full tiny SDXL checkpoint)."""
from __future__ import annotations

import torch

from psa_model.adapter.modules import adapter_config_for_model
from psa_model.adapter.demo import random_adapter, random_embeddings
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import attach_adapter, attach_profile
from support.training_helpers import make_dataset, small_config


def test_sdxl_train_and_infer_predictions_agree(comfy_host, tmp_path):
    import comfy.sample

    from scripts.build_fixtures import ensure_fixtures
    from training.model import load_base
    from training.trainer import Trainer

    from conftest import FIXTURE_DIR

    checkpoint = ensure_fixtures(FIXTURE_DIR, sdxl_checkpoint=True)["sdxl_tiny.safetensors"]
    base = load_base(checkpoint)
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
