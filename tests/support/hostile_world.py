"""A models folder and prompt builders for the reliability tests (bad-input corpus, load, privacy).

Everything is tiny: the SD1.5 test checkpoint, random demo adapters (two for 3584-wide profiles,
one for the tiny LLM's 32-wide embeddings), the demo profiles, a six-user Sage folder with random
embeddings, and the tiny Qwen2 from ``llm_tiny``. Images are 64 px with 2 steps.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from devkit.random_adapters import random_adapter, random_embeddings
from psa_model.adapter.modules import AdapterConfig
from psa_model.formats.adapter_file import save_native

CHECKPOINT = "sd15_tiny.safetensors"
ADAPTERS = {"psa_a.safetensors": (7, 3584), "psa_b.safetensors": (9, 3584), "psa_llm32.safetensors": (11, 32)}
LLM_NAME = "qwen_tiny"
SAGE_ROWS = [  # invented users in the Sage table's columns (not real people)
    (8, "children", "female", "None", "healthy", "healthy", "['Harassment', 'Hate', 'Propaganda', 'Self-Harm', "
     "'Sexuality', 'Shocking', 'Violence']", "[]"),
    (16, "adolescents", "male", "Islam", "healthy", "anxiety", "['Self-Harm', 'Sexuality', 'Violence']",
     "['Harassment', 'Hate', 'Propaganda', 'Shocking']"),
    (25, "young adults", "female", "Christianity", "healthy", "healthy", "[]",
     "['Harassment', 'Hate', 'Propaganda', 'Self-Harm', 'Sexuality', 'Shocking', 'Violence']"),
    (41, "middle-aged", "male", "Buddhism", "visual impairment", "depression", "['Self-Harm', 'Shocking']",
     "['Harassment', 'Hate', 'Propaganda', 'Sexuality', 'Violence']"),
    (67, "young elderly", "female", "None", "hearing impairment", "war", "['Violence', 'Shocking']",
     "['Harassment', 'Hate', 'Propaganda', 'Self-Harm', 'Sexuality']"),
    (80, "elderly", "male", "Christianity", "healthy", "healthy", "['Sexuality']",
     "['Harassment', 'Hate', 'Propaganda', 'Self-Harm', 'Shocking', 'Violence']"),
]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(Path(src).resolve(), dst)


def build_models_dir(root: Path, fixtures: dict[str, Path], with_llm: bool = True) -> Path:
    from devkit.demo_models import layer_dims_from_file, write_demo_profiles

    sd15 = fixtures[CHECKPOINT]
    _link(sd15, root / "checkpoints" / CHECKPOINT)
    dims = layer_dims_from_file(sd15, "sd15")
    (root / "psa_adapters").mkdir(parents=True, exist_ok=True)
    for name, (seed, embed) in ADAPTERS.items():
        config = AdapterConfig(arch="sd15", layer_dims=dims, embed_dim=embed)
        save_native(random_adapter(config, seed=seed, kv_std=0.05), root / "psa_adapters" / name)
    profiles = root / "psa_profiles"
    write_demo_profiles(profiles)
    sage = profiles / "sage_embeddings"
    sage.mkdir(exist_ok=True)
    header = "Age,Age_Group,Gender,Religion,Physical_Condition,Mental_Condition,Banned_Categories,Allowed_Categories"
    lines = [header] + [",".join([str(r[0]), r[1], r[2], r[3], r[4], r[5], f'"{r[6]}"', f'"{r[7]}"'])
                        for r in SAGE_ROWS]
    (profiles / "sage_users.csv").write_text("\n".join(lines) + "\n")
    for uid in range(1, len(SAGE_ROWS) + 1):
        np.save(sage / f"{uid:07d}.npy", random_embeddings(1, 3584, seed=500 + uid)[0].numpy())
    (profiles / "attr_teen.json").write_text(json.dumps({"age": 15, "gender": "male", "mental_condition": "anxiety"}))
    if with_llm:
        from benchmarks.tiny_llm import build_tiny_qwen2

        if not (root / "LLM" / LLM_NAME / "config.json").is_file():
            build_tiny_qwen2(root / "LLM" / LLM_NAME)
    return root


def extra_paths_yaml(root: Path, path: Path) -> Path:
    """Adds ``root/LLM`` to ComfyUI's ``LLM`` folder list (the server helper maps the model kinds)."""
    path.write_text(f"psa_llm_models:\n  base_path: {root}\n  LLM: LLM\n")
    return path


# -- prompt builders ------------------------------------------------------------------------------
def base_prompt(adapter: str = "psa_a.safetensors", profile: dict | None = None, seed: int = 1, batch: int = 1,
                steps: int = 2, size: int = 64, save: str = "SaveImage", prefix: str = "psa_rel",
                cfg: float = 5.0) -> dict:
    """Checkpoint → PSA Model Patcher → PSA KSampler (profile from node 5) → VAE Decode → save."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "PSAModelPatcher", "inputs": {"model": ["1", 0], "adapter_name": adapter}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a park"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "7": {"class_type": "PSAKSampler", "inputs": {
            "model": ["2", 0], "profile": ["5", 0], "psa_scale": 1.0, "seed": seed, "steps": steps, "cfg": cfg,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["3", 0], "negative": ["4", 0],
            "latent_image": ["6", 0], "denoise": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": save, "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }
    prompt.update(profile or load_profile("demo_child.json"))
    return prompt


def load_profile(name: str) -> dict:
    return {"5": {"class_type": "PSALoadProfile", "inputs": {"profile_name": name}}}


def policy_profile(route: str = "nearest", **widgets) -> dict:
    """PSA Profile Policy (node 20) → nearest Sage user or the tiny LLM, as node 5."""
    inputs = {"profile_file": "(none: use the widgets)", "age": 15, "gender": "male", "religion": "(not given)",
              "mental_condition": "anxiety", "physical_condition": "(not given)", "forbidden_source": "rule policy",
              "forbidden": ""}
    inputs.update(widgets)
    nodes = {"20": {"class_type": "PSAProfilePolicy", "inputs": inputs}}
    if route == "nearest":
        nodes["5"] = {"class_type": "PSANearestSageUser", "inputs": {"profile_spec": ["20", 0]}}
    else:
        nodes["5"] = {"class_type": "PSAEncodeProfileLLM", "inputs": {
            "profile_spec": ["20", 0], "llm_name": LLM_NAME, "template": "(project default wording)",
            "embedding_size": 32, "cache": "off"}}
    return nodes


# -- hostile LLM folders ----------------------------------------------------------------------------
LOOP_TEMPLATE = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}ok"
UNSAFE_ADVICE = ("weights_only", "trust_remote_code", "allow_pickle", "set_int_max_str_digits", "Traceback")


def _variant(good: Path, folder: Path, skip: tuple[str, ...] = ()) -> Path:
    """``folder`` holding links to ``good``'s files except ``skip`` (to be replaced by the case)."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in good.iterdir():
        if src.name not in skip and not (folder / src.name).exists():
            os.symlink(src.resolve(), folder / src.name)
    return folder


def _with_file(name: str, data: bytes, skip: tuple[str, ...] = ()):
    def write(good: Path, folder: Path) -> None:
        _variant(good, folder, (name, *skip))
        (folder / name).write_bytes(data)
    return write


def _json_edit(name: str, change, skip: tuple[str, ...] = ()):
    def write(good: Path, folder: Path) -> None:
        data = json.loads((good / name).read_text())
        change(data)
        _with_file(name, json.dumps(data).encode(), skip)(good, folder)
    return write


def _pickled_weights(good: Path, folder: Path) -> None:
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/psa_pwned",))

    _variant(good, folder, ("model.safetensors",))
    torch.save({"model.embed_tokens.weight": Evil()}, folder / "pytorch_model.bin")


# name -> (writer(good, folder), regex every route's error must match). The tokenizer/model are
# the tiny Qwen2's; each case changes one file. Loop/memory cases take the render limit's time.
HOSTILE_LLM = {
    "llm_tpl_loop": (_with_file("chat_template.jinja", LOOP_TEMPLATE.encode()),
                     r"llm_tpl_loop/chat_template\.jinja: rendering did not finish within"),
    "llm_tpl_config_loop": (_json_edit("tokenizer_config.json", lambda d: d.update(chat_template=LOOP_TEMPLATE),
                                       ("chat_template.jinja",)),
                            r"llm_tpl_config_loop/tokenizer_config\.json: rendering did not finish"),
    "llm_tpl_memory": (_with_file("chat_template.jinja", b"{{ 'x' * 3000000000 }}"),
                       r"llm_tpl_memory/chat_template\.jinja: (rendering needed more than|the renderer stopped)"),
    "llm_tpl_output": (_with_file("chat_template.jinja", b"{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}"),
                       r"llm_tpl_output/chat_template\.jinja: the rendered text is over"),
    "llm_tpl_sandbox": (_with_file("chat_template.jinja", b"{{ ''.__class__.__mro__[1].__subclasses__() }}"),
                        r"llm_tpl_sandbox/chat_template\.jinja: the template tried something Jinja's sandbox"),
    "llm_tpl_syntax": (_with_file("chat_template.jinja", b"{{ messages }}\n{% for %}"),
                       r"llm_tpl_syntax/chat_template\.jinja: the template is not valid Jinja \(line 2\)"),
    "llm_tpl_raise": (_with_file("chat_template.jinja",
                                 b"{{ raise_exception('load with trust_remote_code=True, weights_only=False') }}"),
                      r"llm_tpl_raise/chat_template\.jinja: rendering failed \(TemplateError"),
    "llm_pickle_only": (_pickled_weights, r"llm_pickle_only: no \*\.safetensors weights \(it has pytorch_model\.bin"),
    "llm_auto_map": (_json_edit("config.json", lambda d: d.update(auto_map={"AutoModelForCausalLM": "evil.Model"})),
                     r"llm_auto_map/config\.json names Python code shipped in the folder"),
    "llm_tok_auto_map": (_json_edit("tokenizer_config.json",
                                    lambda d: d.update(auto_map={"AutoTokenizer": ["evil.Tok", None]})),
                         r"llm_tok_auto_map/tokenizer_config\.json names Python code"),
    "llm_unknown_arch": (_json_edit("config.json", lambda d: d.update(model_type="evil_arch",
                                                                      architectures=["EvilForCausalLM"])),
                         r"llm_unknown_arch: the (tokenizer|model) cannot be loaded"),
    "llm_huge_config": (_with_file("config.json", b'{"hidden_size": 32, "pad": "' + b"x" * (5 << 20) + b'"}'),
                        r"llm_huge_config/config\.json is over 4 MiB"),
    "llm_deep_config": (_with_file("config.json", b"[" * 100_000), r"llm_deep_config/config\.json cannot be read"),
    "llm_config_list": (_with_file("config.json", b"[32]"), r"llm_config_list/config\.json is not a JSON object"),
    "llm_bad_tokenizer_json": (_with_file("tokenizer.json", b'{"model": {"type": "BPE", "vocab": 7}}'),
                               r"llm_bad_tokenizer_json: the tokenizer cannot be loaded"),
    "llm_bad_tokenizer_config": (_with_file("tokenizer_config.json", b"{not json"),
                                 r"llm_bad_tokenizer_config/tokenizer_config\.json cannot be read"),
    "llm_no_tokenizer": (lambda good, folder: _variant(good, folder, ("tokenizer.json", "tokenizer_config.json")),
                         r"llm_no_tokenizer: no tokenizer files"),
}


def build_hostile_llm_folders(llm_root: Path, good: Path, names=None) -> list[str]:
    """Writes the ``HOSTILE_LLM`` folders (or ``names`` of them) next to ``good`` under ``llm_root``."""
    chosen = list(HOSTILE_LLM) if names is None else list(names)
    for name in chosen:
        if not (llm_root / name / "config.json").exists():
            HOSTILE_LLM[name][0](good, llm_root / name)
    return chosen
