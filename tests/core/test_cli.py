"""Every command line answers a user's mistake as argparse does: one ``error:`` line, exit 2, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def _usage_error(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_train_psa_without_arguments_names_the_required_options():
    result = _run("-m", "training.train_psa")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m training.train_psa: error: the following arguments are required:")
    for flag in ("--checkpoint", "--train-data", "--embeddings", "--output-dir"):
        assert flag in last


def test_train_psa_help_marks_required_options_and_cites_the_readme():
    out = _run("-m", "training.train_psa", "--help").stdout
    required = out.split("required (on the command line or in --config):\n")[1].split("\n\n")[0]
    assert all(flag in required for flag in ("--checkpoint", "--train-data", "--embeddings", "--output-dir"))
    assert "(default:" not in required  # no "(default: '')" on an option that must be given
    assert "README" in out and "§" not in out and "reference note" not in out


def test_train_psa_names_a_missing_file(capsys, tmp_path):
    from training.config import resolve_config

    data = tmp_path / "split"
    data.mkdir()
    argv = ["--checkpoint", str(tmp_path / "no.safetensors"), "--train-data", str(data), "--embeddings",
            str(tmp_path), "--output-dir", str(tmp_path / "out")]
    line = _usage_error(capsys, resolve_config, argv)
    assert f"--checkpoint {tmp_path / 'no.safetensors'}: no such file" in line
    (tmp_path / "no.safetensors").write_bytes(b"x")
    line = _usage_error(capsys, resolve_config, argv)
    assert "--train-data" in line and "metadata.jsonl" in line


@pytest.mark.parametrize("content, expected", [("{not json", "not valid JSON"), ('["a"]', "one JSON object"),
                                               ('{"learning_rate": 1}', "unknown option(s) learning_rate")])
def test_train_psa_names_a_bad_config_file(capsys, tmp_path, content, expected):
    from training.config import resolve_config

    config = tmp_path / "c.json"
    config.write_text(content)
    line = _usage_error(capsys, resolve_config, ["--config", str(config)])
    assert f"--config {config}" in line and expected in line


def test_run_demo_with_a_missing_path_says_so_and_does_not_fall_back_to_the_demo():
    result = _run("-m", "scripts.run_demo", "--checkpoint", "/path/file.safetensors", "--adapter", "/x.bin",
                  "--profiles", "a.json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "embedded default" not in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "run_demo: error: --checkpoint /path/file.safetensors: no such file; give the path to the file, "
        "or its name together with --models-dir")


@pytest.mark.parametrize("argv, expected", [
    (["--checkpoint", "a.safetensors"], "--adapter and --profiles missing"),
    (["--steps", "0"], "argument --steps: 0 must be at least 1"),
    (["--size", "big"], "argument --size: 'big' is not a whole number"),
])
def test_run_demo_usage_errors(capsys, argv, expected):
    from scripts.run_demo import main

    assert expected in _usage_error(capsys, main, argv)


def _models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for kind, name in (("checkpoints", "base.safetensors"), ("psa_adapters", "psa.safetensors"),
                       ("psa_profiles", "kid.json")):
        (models / kind).mkdir(parents=True)
        (models / kind / name).write_text("{}")
    return models


def test_run_demo_takes_names_and_paths_and_registers_the_paths_folders(tmp_path):
    from scripts.run_demo import build_parser, resolve_models

    models = _models(tmp_path)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "adult.npy").write_bytes(b"")
    parser = build_parser()
    args = parser.parse_args(["--models-dir", str(models), "--checkpoint", "base.safetensors", "--adapter",
                              str(models / "psa_adapters" / "psa.safetensors"), "--profiles", "kid.json",
                              str(elsewhere / "adult.npy"), "kid.json"])
    folders = resolve_models(parser, args)
    assert (args.checkpoint, args.adapter, args.profiles) == ("base.safetensors", "psa.safetensors",
                                                             ["kid.json", "adult.npy", "kid.json"])
    # A path registers its folder (even inside --models-dir); a name in --models-dir needs none.
    assert folders == {"psa_adapters": [(models / "psa_adapters").resolve()], "psa_profiles": [elsewhere.resolve()]}


def test_run_demo_refuses_two_profiles_with_the_same_name(capsys, tmp_path):
    from scripts.run_demo import build_parser, resolve_models

    models = _models(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "kid.json").write_text("{}")
    parser = build_parser()
    args = parser.parse_args(["--models-dir", str(models), "--checkpoint", "base.safetensors", "--adapter",
                              "psa.safetensors", "--profiles", "kid.json", str(tmp_path / "other" / "kid.json")])
    line = _usage_error(capsys, lambda _: resolve_models(parser, args), None)
    assert "both named kid.json" in line


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_comparison_graph_follows_the_profile_count(count):
    from devkit.workflows import API_DIR, substitute, with_profile_count

    api = json.loads((API_DIR / "psa_multi_profile_comparison.json").read_text())
    names = [f"p{i}.json" for i in range(count)]
    graph = substitute(with_profile_count(api, count), profiles=names)
    sampler = next(n for n in graph.values() if n["class_type"] == "PSAKSampler")

    def leaves(link) -> list[str]:  # the profile files feeding a link, in batch order
        node = graph[link[0]]
        if node["class_type"] == "PSALoadProfile":
            return [node["inputs"]["profile_name"]]
        return [name for key in sorted(node["inputs"]) for name in leaves(node["inputs"][key])]

    assert leaves(sampler["inputs"]["profile"]) == names
    assert all(len(n["inputs"]) <= 4 for n in graph.values() if n["class_type"] == "PSAProfileBatch")
    latent = next(n for n in graph.values() if n["class_type"] == "EmptyLatentImage")
    assert latent["inputs"]["batch_size"] == count
    grid = next(n for n in graph.values() if n["class_type"] == "PSAImageGrid")
    assert grid["inputs"]["columns"] == {1: 1, 2: 2, 3: 3, 5: 3, 8: 3}[count]


def test_convert_names_a_missing_source(capsys, tmp_path):
    from psa_model.formats.convert import main

    line = _usage_error(capsys, main, [str(tmp_path / "nope.bin"), str(tmp_path / "out.safetensors")])
    assert line.endswith(f"error: src {tmp_path / 'nope.bin'}: no such file; give the adapter file to convert")


@pytest.mark.parametrize("module, argv, expected", [
    ("scripts.proof_learning", ["--dpo-steps", "0"], "argument --dpo-steps: 0 must be at least 1"),
    ("benchmarks.training", ["--repeats", "x"], "argument --repeats: 'x' is not a whole number"),
])
def test_script_option_errors(capsys, module, argv, expected):
    import importlib

    assert expected in _usage_error(capsys, importlib.import_module(module).main, argv)
