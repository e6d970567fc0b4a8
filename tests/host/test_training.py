"""Training through ComfyUI's model code (README: Training): consistency with the node path, resume,
bad input, atomic checkpoints, CLI and a learning smoke run on the tiny SD1.5 fixture."""
from __future__ import annotations

import errno
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from psa_model.adapter.modules import adapter_config_for_model
from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.formats.adapter_file import load_adapter, read_adapter_tensors, save_native
from psa_model.adapter.layer_map import architecture, match_sites
from psa_model.adapter.patch import attach_adapter, attach_profile
from support.training_helpers import small_config, trainer_for


def test_train_and_infer_predictions_agree(base, data, fixture_paths, tmp_path):
    """The trainer's ε for a batch equals the patched MODEL's ε on the node sampling path."""
    import comfy.sample

    tr = trainer_for(small_config(data, tmp_path, fixture_paths["sd15_tiny.safetensors"]), base)
    sites = match_sites(architecture("sd15"), base.model.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sd15", sites, embed_dim=64), seed=1, kv_std=0.05)
    with torch.no_grad():
        for name, p in tr.adapter.named_parameters():
            p.copy_(adapter.state_dict()[name])
    emb = random_embeddings(2, 64, seed=4)
    cond = tr.text.encode("a picture about violence, number 0")["c_crossattn"]
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9))

    node_model = attach_profile(attach_adapter(base.model, adapter), emb).clone()
    recorded = {}

    def record(args):
        recorded.update(x=args["input"].clone(), sigma=args["sigma"].clone(),
                        eps=(args["input"] - args["conds_out"][0]) / args["sigma"].reshape(-1, 1, 1, 1))
        return args["conds_out"]

    node_model.set_model_sampler_pre_cfg_function(record)
    comfy.sample.sample(node_model, noise, 1, 1.0, "euler", "normal", [[cond, {}]], [[cond, {}]],
                        torch.zeros_like(noise), denoise=0.6, disable_pbar=True, seed=0)
    inputs = {"x_noisy": recorded["x"], "sigma": recorded["sigma"], "conds": {"c_crossattn": cond.repeat(2, 1, 1)},
              "embeddings": emb}
    eps_train, eps_ref = tr.predictions(inputs, grad=True)
    assert eps_train.requires_grad
    assert (eps_train.detach() - recorded["eps"]).abs().max().item() <= 1e-5
    # not vacuous: the adapter changes the prediction, and the reference is the base model
    assert (eps_train.detach() - eps_ref).abs().max().item() > 1e-3
    base_eps = (recorded["x"] - base.model.model.apply_model(recorded["x"], recorded["sigma"], c_crossattn=cond.repeat(2, 1, 1))) \
        / recorded["sigma"].reshape(-1, 1, 1, 1)
    assert (eps_ref - base_eps).abs().max().item() <= 1e-5


def test_resume_is_exact_and_refuses_other_runs(base, data, fixture_paths, tmp_path):
    from training.checkpoint import ResumeError

    ckpt = fixture_paths["sd15_tiny.safetensors"]
    one = trainer_for(small_config(data, tmp_path / "one", ckpt, max_steps=4), base)
    one.train()
    first = trainer_for(small_config(data, tmp_path / "two", ckpt, max_steps=2, checkpoint_every=2), base)
    first.train()
    step2 = tmp_path / "two" / "checkpoints" / "step_2"
    assert (step2 / "adapter.safetensors").is_file() and (tmp_path / "two" / "training_plot.png").is_file()
    second = trainer_for(small_config(data, tmp_path / "two", ckpt, max_steps=4, resume=str(step2)), base)
    assert second.step == 2
    second.train()
    a, _ = read_adapter_tensors(tmp_path / "one" / "psa_adapter.safetensors")
    b, _ = read_adapter_tensors(tmp_path / "two" / "psa_adapter.safetensors")
    assert a.keys() == b.keys()
    assert any(v.abs().max() > 0 for k, v in a.items() if "to_v_user" in k)  # it trained
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in map(json.loads, (tmp_path / "two" / "metrics.jsonl").read_text().splitlines())]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ResumeError, match="different run configuration"):
        trainer_for(small_config(data, tmp_path / "three", ckpt, max_steps=4, lr=2e-3, resume=str(step2)), base)


def test_missing_embeddings_are_counted_and_stop_the_run(data, tmp_path):
    import shutil

    from training.data import DataValidationError, load_split

    emb = tmp_path / "emb"
    shutil.copytree(data["embeddings"], emb)
    removed = sorted(emb.glob("*.npy"))[:2]
    for p in removed:
        p.unlink()
    with pytest.raises(DataValidationError) as err:
        load_split(data["train"], emb)
    msg = str(err.value)
    assert "2 user(s) without an embedding" in msg and "--skip-missing" in msg
    full = load_split(data["train"], data["embeddings"])
    part = load_split(data["train"], emb, skip_missing=True)
    removed_ids = {p.stem for p in removed}
    lost = sum(1 for p in full.pairs if p.user_id in removed_ids)
    assert lost > 0 and len(part) == len(full) - lost
    assert all(p.user_id not in removed_ids for p in part.pairs)


def test_bad_embeddings_and_images_are_clear_errors(data, tmp_path):
    import shutil

    from training.data import DataValidationError, load_image, load_split

    root = tmp_path / "copy"
    shutil.copytree(data["train"].parent, root)
    emb = root / "embeddings"
    first = sorted(emb.glob("*.npy"))[0]
    np.save(first, np.zeros(64, dtype=np.float32))
    with pytest.raises(DataValidationError, match="all zeros"):
        load_split(root / "train", emb)
    np.save(first, np.ones(32, dtype=np.float32))
    with pytest.raises(DataValidationError, match="dimension 32, expected 64"):
        load_split(root / "train", emb)
    np.save(first, np.ones((1, 1, 64), dtype=np.float32))  # the (1,1,E) layout is accepted
    load_split(root / "train", emb)
    img = sorted((root / "train").glob("*.png"))[0]
    img.write_bytes(b"not a png at all")
    with pytest.raises(DataValidationError, match=img.name):
        load_split(root / "train", emb)
    with pytest.raises(DataValidationError, match="cannot be decoded"):
        load_image(img, 64)


def test_sd15_adapter_warm_started_on_sdxl_is_refused(base, sdxl_unet, tmp_path):
    from training.model import ModelMismatchError, build_adapter

    sites = match_sites(architecture("sd15"), base.model.get_model_object("diffusion_model"))
    path = tmp_path / "sd15.safetensors"
    save_native(random_adapter(adapter_config_for_model("sd15", sites, embed_dim=64)), path)
    with pytest.raises(ModelMismatchError, match="sd15 adapter but the base checkpoint is sdxl"):
        build_adapter(sdxl_unet, "sdxl", 64, warm_start=path)
    warm = build_adapter(base.model, "sd15", 64, warm_start=path)  # fits its own family
    assert torch.equal(warm.state_dict()["layers.0.to_v_user.weight"], load_adapter(path).state_dict()["layers.0.to_v_user.weight"])
    with pytest.raises(ModelMismatchError, match="64-d embeddings"):
        build_adapter(base.model, "sd15", 128, warm_start=path)


def test_checkpoint_and_adapter_writes_are_atomic(base, monkeypatch, tmp_path):
    import psa_model.formats.adapter_file as formats
    import training.checkpoint as ck

    sites = match_sites(architecture("sd15"), base.model.get_model_object("diffusion_model"))
    adapter = random_adapter(adapter_config_for_model("sd15", sites, embed_dim=64), seed=2)
    folder = ck.save_checkpoint(tmp_path / "checkpoints" / "step_2", adapter, {"step": 2}, {"steps": 2})
    before = (folder / "adapter.safetensors").read_bytes()
    final = tmp_path / "psa_adapter.safetensors"
    save_native(adapter, final)
    final_bytes = final.read_bytes()

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    other = random_adapter(adapter.config, seed=3)
    monkeypatch.setattr(ck.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        ck.save_checkpoint(tmp_path / "checkpoints" / "step_2", other, {"step": 2}, {})
    with pytest.raises(OSError, match="No space"):
        ck.save_checkpoint(tmp_path / "checkpoints" / "step_4", other, {"step": 4}, {})
    monkeypatch.setattr(formats.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_native(other, final)
    monkeypatch.undo()
    assert (folder / "adapter.safetensors").read_bytes() == before
    assert final.read_bytes() == final_bytes
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]  # no partial step_4
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_help_documents_every_option():
    from dataclasses import fields

    from training.config import TrainConfig

    out = subprocess.run([sys.executable, "-m", "training.train_psa", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out
    assert "--config" in out


def test_training_outputs_load_in_the_node_path(base, data, fixture_paths, tmp_path):
    """A short run writes the native adapter (with training metadata), the reference export,
    the resolved config and the plot; the adapter loads and attaches to the model."""
    cfg = small_config(data, tmp_path, fixture_paths["sd15_tiny.safetensors"], max_steps=4, batch_size=4,
                       lr=1e-2, validate_every=2, checkpoint_every=2, export_reference_bin=True,
                       random_flip=False)
    tr = trainer_for(cfg, base)
    path = tr.train()
    val = tr.evaluate()
    assert val["pairs"] == 2 * 4
    adapter = load_adapter(path)
    meta = json.loads(read_adapter_tensors(path)[1]["training"])
    assert meta["steps"] == 4 and meta["beta"] == 5000.0 and meta["arch"] == "sd15" and meta["data_fingerprint"]
    assert "boundary_data" not in meta   # plain Sage-style data: not trained to follow stated categories
    attach_adapter(base.model, adapter)
    ref = load_adapter(tmp_path / "psa_adapter.bin")
    for k, v in adapter.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k])
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 1e-2
    assert (tmp_path / "training_plot.png").stat().st_size > 1000


def test_boundary_decorrelated_data_is_recorded_in_the_adapter(base, data, fixture_paths, tmp_path):
    """training.boundaries: resampled users' pairs follow their new sets, and the adapter trained on
    the split says so in its metadata (README, "Stated categories that contradict the attributes")."""
    from psa_model.profiles.boundaries import adapter_boundary_data
    from training.boundaries import resample, write_split
    from training.data import load_split

    lines = (data["train"] / "metadata.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    forbidden = {f"{int(r['user_data']['User_ID']):07d}": tuple(r["user_data"]["Forbidden"]) for r in records}
    records, new_users = resample(records, forbidden, share=0.5, seed=0, first_new_id=100)
    vectors = {uid: np.load(data["embeddings"] / f"{source}.npy") + 0.1 for uid, (source, _) in new_users.items()}
    train = write_split(data["train"], data["embeddings"], tmp_path / "resampled", records, vectors, {"share": 0.5})
    split = load_split(train, tmp_path / "resampled" / "embeddings")
    assert len(split) == len(records) and set(new_users) <= set(split.embeddings)
    cfg = small_config(dict(data, train=train, embeddings=tmp_path / "resampled" / "embeddings"), tmp_path / "run",
                       fixture_paths["sd15_tiny.safetensors"], max_steps=1)
    path = trainer_for(cfg, base).train()
    recorded = adapter_boundary_data(read_adapter_tensors(path)[1])
    assert recorded["recipe"] == "resampled explicit categories" and recorded["share"] == 0.5


def test_learns_user_conditioned_preferences(comfy_host, fixture_paths, tmp_path):
    """README: Training (the short version of ``scripts/proof_learning.py``): on conflicting preferences,
    held-out implicit accuracy ≥ 0.85 with the users' embeddings and ≤ 0.65 with them zeroed."""
    from scripts.proof_learning import run_proof

    results = run_proof(tmp_path, dpo_steps=25, denoise_steps=30, fixture=fixture_paths["sd15_tiny.safetensors"])
    assert results["real_embeddings"]["pairs"] == results["zero_embeddings"]["pairs"] == 32
    assert results["real_embeddings"]["accuracy"] >= 0.85, results
    assert results["zero_embeddings"]["accuracy"] <= 0.65, results


def test_latent_cache_is_reused_across_runs_but_not_across_checkpoints(base, data, tmp_path):
    """Second run with the same cache folder encodes nothing; another checkpoint's VAE does not
    reuse the first one's latents."""
    from training.latents import LatentSource

    images = sorted(data["train"].glob("*.png"))[:3]
    cache = tmp_path / "latents"
    first = LatentSource(base.vae, base.model, 64, cache, vae_identity="sd15_tiny|1")
    a = first.get(images, [False] * 3)
    again = LatentSource(base.vae, base.model, 64, cache, vae_identity="sd15_tiny|1")
    b = again.get(images, [False] * 3)
    assert first.encoded == 3 and again.encoded == 0 and torch.equal(a, b)
    other = LatentSource(base.vae, base.model, 64, cache, vae_identity="another_checkpoint|2")
    other.get(images, [False] * 3)
    assert other.encoded == 3
