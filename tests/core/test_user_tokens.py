"""User tokens T, key/value groups G and the per-group / joint modes in the file formats (docs/user-tokens.md)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from psa_model.adapter.layer_map import ARCHITECTURES
from psa_model.adapter.modules import AdapterConfig, PSAAdapter
from psa_model.formats.adapter_file import AdapterFormatError, load_adapter, save_native
from psa_model.formats.convert import main as convert_main
from support.reference_psa import reference_tokens

C, E, WIDTH = 768, 24, 16


def reference_dict(tokens: int, groups: int, seed: int = 0) -> dict:
    """A reference-layout SD1.5 adapter with ``groups`` key/value groups and ``tokens`` tokens."""
    gen = torch.Generator().manual_seed(seed)
    layers = {f"{i}.{kind}.{g}.weight": torch.randn(WIDTH, C, generator=gen)
              for i in range(len(ARCHITECTURES["sd15"].sites)) for g in range(groups)
              for kind in ("to_k_user", "to_v_user")}
    proj = {"proj.weight": torch.randn(tokens * C, E, generator=gen),
            "proj.bias": torch.randn(tokens * C, generator=gen),
            "norm.weight": torch.randn(C, generator=gen), "norm.bias": torch.randn(C, generator=gen)}
    return {"psa_adapter": layers, "user_proj": proj}


def _meta(path) -> dict:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())


@pytest.mark.parametrize("tokens, groups", [(4, 1), (4, 2), (3, 3)])
def test_reference_multi_token_round_trip_keeps_per_group_semantics(tmp_path, tokens, groups):
    original = reference_dict(tokens, groups)
    torch.save(original, tmp_path / "ref.bin")
    assert convert_main([str(tmp_path / "ref.bin"), str(tmp_path / "native.safetensors")]) == 0
    meta = _meta(tmp_path / "native.safetensors")
    assert (meta["user_attention"], meta["user_tokens"], meta["user_groups"]) == ("per-group", str(tokens), str(groups))
    assert meta["psa_format_version"] == "2"  # a version-1 reader would evaluate it jointly: it must refuse
    assert convert_main([str(tmp_path / "native.safetensors"), str(tmp_path / "back.bin")]) == 0
    back = torch.load(tmp_path / "back.bin", weights_only=True)
    assert back.keys() == original.keys()
    for group in original:
        assert back[group].keys() == original[group].keys()
        assert all(torch.equal(back[group][k], original[group][k]) for k in original[group])
    config = load_adapter(tmp_path / "native.safetensors").config
    assert (config.user_attention, config.user_tokens, config.user_groups) == ("per-group", tokens, groups)


def test_single_token_native_files_stay_version_one(tmp_path):
    torch.save(reference_dict(1, 1), tmp_path / "ref.bin")
    assert convert_main([str(tmp_path / "ref.bin"), str(tmp_path / "native.safetensors")]) == 0
    meta = _meta(tmp_path / "native.safetensors")
    assert meta["psa_format_version"] == "1" and meta["user_attention"] == "per-group"


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_more_groups_than_tokens_is_refused_naming_both_counts(tmp_path, suffix):
    data = reference_dict(tokens=2, groups=3)
    path = tmp_path / f"psa_adapter{suffix}"
    if suffix == ".bin":
        torch.save(data, path)
    else:
        save_file({f"{g}.{k}": v for g, items in data.items() for k, v in items.items()}, str(path))
    with pytest.raises(AdapterFormatError, match=r"3 user key/value groups.*2 user token"):
        load_adapter(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["psa_adapter"].pop("5.to_k_user.1.weight"), r"psa_adapter\.5\.to_k_user\.1\.weight is missing"),
    (lambda d: [d["psa_adapter"].pop(f"{i}.{k}.1.weight") for i in range(16) for k in ("to_k_user", "to_v_user")]
     and d["psa_adapter"].update({"0.to_k_user.2.weight": torch.zeros(WIDTH, C)}), r"group indices are \[0, 2\]"),
    (lambda d: d["psa_adapter"].update({"0.to_q_user.0.weight": torch.zeros(WIDTH, C)}), "unexpected key"),
])
def test_inconsistent_groups_are_refused(tmp_path, mutate, message):
    data = reference_dict(tokens=2, groups=2)
    mutate(data)
    torch.save(data, tmp_path / "psa_adapter.bin")
    with pytest.raises(AdapterFormatError, match=message):
        load_adapter(tmp_path / "psa_adapter.bin")


def _joint_native(tmp_path, tokens: int, legacy: bool = False):
    config = AdapterConfig("sd15", (WIDTH,) * 16, embed_dim=E, user_tokens=tokens, user_attention="joint")
    path = tmp_path / "joint.safetensors"
    save_native(PSAAdapter(config), path)
    if legacy:  # as written before user_attention existed: no mode, no group count
        with safe_open(str(path), framework="pt") as fh:
            meta, tensors = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}
        del meta["user_attention"], meta["user_groups"]
        save_file(tensors, str(path), metadata=meta)
    return path


def test_converter_refuses_joint_multi_token_to_reference(tmp_path, capsys):
    path = _joint_native(tmp_path, tokens=3)
    assert _meta(path)["user_attention"] == "joint" and _meta(path)["psa_format_version"] == "1"
    for target in (["back.bin"], ["back.safetensors", "--to", "reference-safetensors"]):
        assert convert_main([str(path), str(tmp_path / target[0]), *target[1:]]) == 2
        assert "joint attention over 3 user tokens" in capsys.readouterr().err
        assert not (tmp_path / target[0]).exists()


def test_joint_single_token_converts_to_reference(tmp_path):
    path = _joint_native(tmp_path, tokens=1)
    assert convert_main([str(path), str(tmp_path / "back.bin")]) == 0
    assert load_adapter(tmp_path / "back.bin").config.user_attention == "per-group"


def test_legacy_multi_token_native_file_reads_as_joint(tmp_path):
    path = _joint_native(tmp_path, tokens=2, legacy=True)
    assert "user_attention" not in _meta(path)
    assert load_adapter(path).config.user_attention == "joint"
    assert convert_main([str(path), str(tmp_path / "back.bin")]) == 2


def test_per_group_branch_is_the_sum_of_the_groups_values(tmp_path):
    """keys_values (per-group) against a hand computation: Σ_g W_v,g · token_g, token g from the
    reference's projection; tokens ≥ G unused (T = 4, G = 2)."""
    data = reference_dict(tokens=4, groups=2, seed=1)
    torch.save(data, tmp_path / "psa_adapter.bin")
    adapter = load_adapter(tmp_path / "psa_adapter.bin")
    e = torch.randn(3, E, generator=torch.Generator().manual_seed(2))
    proj = {f"user_proj.{k}": v for k, v in data["user_proj"].items()}
    tokens = reference_tokens(proj, e, 4)
    kv = adapter.keys_values(adapter.project(e))
    for i in (0, 7, 15):
        expected = sum(tokens[:, g] @ data["psa_adapter"][f"{i}.to_v_user.{g}.weight"].double().T for g in range(2))
        keys, values = kv[i]
        assert keys.shape == (3, 2, WIDTH) and values.shape == (3, 1, WIDTH)
        assert (values[:, 0].double() - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_trainer_refuses_reference_export_of_a_joint_multi_token_run(tmp_path, capsys):
    from training.config import resolve_config

    (tmp_path / "x.safetensors").write_bytes(b"")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metadata.jsonl").write_text("")
    (tmp_path / "e").mkdir()
    base = ["--checkpoint", str(tmp_path / "x.safetensors"), "--train-data", str(tmp_path / "d"),
            "--embeddings", str(tmp_path / "e"), "--output-dir", str(tmp_path / "o")]
    assert resolve_config(base + ["--export-reference-bin"]).export_reference_bin
    with pytest.raises(SystemExit) as stopped:  # a bad option ends as argparse's one error line
        resolve_config(base + ["--export-reference-bin", "--user-tokens", "2"])
    assert stopped.value.code == 2
    assert "--export-reference-bin needs --user-tokens 1" in capsys.readouterr().err
