"""Bad-input corpus through the real server (docs/security.md, "Errors").

Each case puts a bad file into a model folder, a bad widget value or a bad link into a prompt.
Every case must give an error that names the cause, leave the server up, write no output file,
and the next good prompt must succeed. One server (``hostile_server``) runs the whole corpus.
"""
from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from devkit.comfy_server import ServerError
from support.hostile_world import (HOSTILE_LLM, LLM_NAME, UNSAFE_ADVICE, base_prompt, build_hostile_llm_folders,
                                   load_profile, policy_profile)

NO_FILE = "(none: use the widgets)"


@dataclass
class Case:
    id: str
    prompt: Callable[[], dict]
    expect: str  # regex the error must match
    files: Callable[[Path], None] = field(default=lambda root: None)


# -- file writers ------------------------------------------------------------------------------------
def _bytes(folder: str, name: str, data: bytes):
    def write(root: Path) -> None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_bytes(data)
    return write


def _json(folder: str, name: str, value):
    return _bytes(folder, name, json.dumps(value).encode())


def _npy(name: str, array: np.ndarray, allow_pickle: bool = False):
    def write(root: Path) -> None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=allow_pickle)
        (root / "psa_profiles" / name).write_bytes(buf.getvalue())
    return write


def _profile_json(name: str, spec: dict, npy: str | None = None):
    def write(root: Path) -> None:
        if npy:
            np.save(root / "psa_profiles" / npy, np.ones(3584, np.float32))
        (root / "psa_profiles" / name).write_text(json.dumps(spec))
    return write


def _adapter_variant(name: str, change: Callable[[dict, dict], None]):
    """A copy of psa_a.safetensors with its tensors/metadata changed."""
    def write(root: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(root / "psa_adapters" / "psa_a.safetensors"), framework="pt") as fh:
            meta, tensors = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}
        change(tensors, meta)
        save_file(tensors, str(root / "psa_adapters" / name), metadata=meta)
    return write


def _truncated(name: str):
    def write(root: Path) -> None:
        data = (root / "psa_adapters" / "psa_a.safetensors").read_bytes()
        (root / "psa_adapters" / name).write_bytes(data[: len(data) // 2])
    return write


def _evil_pickle(root: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/psa_pwned",))

    buf = io.BytesIO()
    torch.save({"psa_adapter": Evil(), "user_proj": {}}, buf)
    (root / "psa_adapters" / "evil.bin").write_bytes(buf.getvalue())


def _fifo(folder: str, name: str):
    def write(root: Path) -> None:
        path = root / folder / name
        if not path.exists():
            os.mkfifo(path)
    return write


def _llm_folder(name: str, config: bytes):
    def write(root: Path) -> None:
        (root / "LLM" / name).mkdir(parents=True, exist_ok=True)
        (root / "LLM" / name / "config.json").write_bytes(config)
    return write


def _hostile_llm(name: str):
    def write(root: Path) -> None:
        build_hostile_llm_folders(root / "LLM", root / "LLM" / LLM_NAME, [name])
    return write


def _hostile_llm_case(name: str) -> "Case":
    return Case(name.replace("_", "-"), _llm(llm_name=name), HOSTILE_LLM[name][1], _hostile_llm(name))


# -- prompt builders -------------------------------------------------------------------------------
def _with(prompt: dict, node: str, **inputs) -> dict:
    prompt[node]["inputs"].update(inputs)
    return prompt


def _adapter(name: str) -> Callable[[], dict]:
    return lambda: base_prompt(adapter=name)


def _profile(name: str) -> Callable[[], dict]:
    return lambda: base_prompt(profile=load_profile(name))


def _policy(route: str = "nearest", adapter: str = "psa_a.safetensors", **widgets) -> Callable[[], dict]:
    return lambda: base_prompt(adapter=adapter, profile=policy_profile(route, **widgets))


def _llm(**inputs) -> Callable[[], dict]:
    def build() -> dict:
        prompt = base_prompt(adapter="psa_llm32.safetensors", profile=policy_profile("llm"))
        return _with(prompt, "5", **inputs)
    return build


def _batch(first: str, second: str, latents: int) -> Callable[[], dict]:
    def build() -> dict:
        prompt = base_prompt(batch=latents, profile={
            "10": {"class_type": "PSALoadProfile", "inputs": {"profile_name": first}},
            "11": {"class_type": "PSALoadProfile", "inputs": {"profile_name": second}},
            "5": {"class_type": "PSAProfileBatch", "inputs": {"profile_1": ["10", 0], "profile_2": ["11", 0]}}})
        return prompt
    return build


def _sampler(**inputs) -> Callable[[], dict]:
    return lambda: _with(base_prompt(), "7", **inputs)


def _relink(node: str, name: str, value) -> Callable[[], dict]:
    def build() -> dict:
        prompt = base_prompt()
        if value is None:
            del prompt[node]["inputs"][name]
        else:
            prompt[node]["inputs"][name] = value
        return prompt
    return build


CASES = [
    # adapters (files in psa_adapters)
    Case("adapter-empty", _adapter("empty.safetensors"), r"empty\.safetensors: not a readable \.safetensors",
         _bytes("psa_adapters", "empty.safetensors", b"")),
    Case("adapter-garbage", _adapter("garbage.safetensors"), r"garbage\.safetensors: not a readable",
         _bytes("psa_adapters", "garbage.safetensors", os.urandom(4096))),
    Case("adapter-truncated", _adapter("half.safetensors"), r"half\.safetensors: not a readable",
         _truncated("half.safetensors")),
    Case("adapter-pickled-code", _adapter("evil.bin"), r"evil\.bin: not a plain tensor pickle", _evil_pickle),
    Case("adapter-garbage-bin", _adapter("junk.bin"), r"junk\.bin: not a plain tensor pickle",
         _bytes("psa_adapters", "junk.bin", b"PK\x03\x04" + os.urandom(256))),
    Case("adapter-fifo", _adapter("fifo.safetensors"), r"fifo\.safetensors.*not a regular file",
         _fifo("psa_adapters", "fifo.safetensors")),
    Case("adapter-future-version", _adapter("v99.safetensors"), r"v99\.safetensors: native format version 99",
         _adapter_variant("v99.safetensors", lambda t, m: m.update(psa_format_version="99"))),
    Case("adapter-wrong-arch", _adapter("arch.safetensors"), r"arch\.safetensors: .*sdxl adapters have 70 layers",
         _adapter_variant("arch.safetensors", lambda t, m: m.update(arch="sdxl"))),
    Case("adapter-missing-tensor", _adapter("miss.safetensors"), r"miss\.safetensors: inconsistent adapter",
         _adapter_variant("miss.safetensors", lambda t, m: t.pop("layers.3.to_k_user.weight"))),
    Case("adapter-no-metadata", _adapter("nometa.safetensors"), r"nometa\.safetensors: expected groups",
         _adapter_variant("nometa.safetensors", lambda t, m: m.clear())),
    Case("adapter-not-listed", _adapter("nope.safetensors"), r"adapter_name.*nope\.safetensors"),
    Case("adapter-traversal", _adapter("../../../etc/passwd"), r"adapter_name"),
    # profiles (files in psa_profiles)
    Case("profile-bad-json", _profile("broken.json"), r"broken\.json: cannot read profile JSON",
         _bytes("psa_profiles", "broken.json", b'{"embedding": "demo_child.npy",')),
    Case("profile-not-utf8", _profile("latin1.json"), r"latin1\.json: cannot read profile JSON \(not UTF-8",
         _bytes("psa_profiles", "latin1.json", '{"embedding": "Müller.npy"}'.encode("latin-1"))),
    Case("profile-deep-json", _profile("deep.json"), r"deep\.json: cannot read profile JSON",
         _bytes("psa_profiles", "deep.json", b"[" * 200_000)),
    Case("profile-huge-json", _profile("huge.json"), r"huge\.json: .* too large",
         _bytes("psa_profiles", "huge.json", b" " * (1_100_000) + b"{}")),
    Case("profile-json-list", _profile("list.json"), r"list\.json: a profile file must be a JSON object",
         _json("psa_profiles", "list.json", ["demo_child.npy"])),
    Case("profile-forbidden-string", _profile("fstr.json"), r"fstr\.json: 'forbidden' must be a list",
         _json("psa_profiles", "fstr.json", {"embedding": "demo_child.npy", "forbidden": "Hate"})),
    Case("profile-unknown-key", _profile("ukey.json"), r"ukey\.json: unknown keys \['colour'\].*accepts only",
         _json("psa_profiles", "ukey.json", {"embedding": "demo_child.npy", "colour": "blue"})),
    Case("profile-name-type", _profile("ntype.json"), r"ntype\.json: 'name' must be text",
         _json("psa_profiles", "ntype.json", {"embedding": "demo_child.npy", "name": 7})),
    Case("profile-unknown-category", _profile("ucat.json"), r"ucat\.json: unknown categories \['Gore'\]",
         _json("psa_profiles", "ucat.json", {"embedding": "demo_child.npy", "forbidden": ["Gore"]})),
    Case("profile-escape-existing", _profile("esc1.json"), r"esc1\.json: 'embedding' .* points outside the model",
         _json("psa_profiles", "esc1.json", {"embedding": "../psa_adapters/psa_a.safetensors"})),
    Case("profile-escape-missing", _profile("esc2.json"), r"esc2\.json: 'embedding' .* points outside the model",
         _json("psa_profiles", "esc2.json", {"embedding": "../../no/such/file.npy"})),
    Case("profile-escape-absolute", _profile("esc3.json"), r"esc3\.json: 'embedding' .* points outside the model",
         _json("psa_profiles", "esc3.json", {"embedding": "/etc/hostname"})),
    Case("profile-missing-embedding", _profile("gone.json"), r"gone\.json: its embedding 'gone\.npy'.*not found",
         _json("psa_profiles", "gone.json", {"embedding": "gone.npy"})),
    Case("profile-fifo", _profile("pipe.json"), r"pipe\.json.*not a regular file",
         _fifo("psa_profiles", "pipe.json")),
    Case("npy-pickled", _profile("obj.npy"), r"obj\.npy: not a plain numeric \.npy file \(it holds pickled",
         _npy("obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)),
    Case("npy-strings", _profile("str.npy"), r"str\.npy: embedding has dtype",
         _npy("str.npy", np.array(["0.1", "0.2"]))),
    Case("npy-2d", _profile("mat.npy"), r"mat\.npy: expected one embedding of shape",
         _npy("mat.npy", np.ones((4, 3584)))),
    Case("npy-nan", _profile("nan.npy"), r"NaN or Inf", _npy("nan.npy", np.full(3584, np.nan, np.float32))),
    Case("npy-overflow", _profile("big.npy"), r"NaN or Inf", _npy("big.npy", np.full(3584, 1e300))),
    Case("npy-garbage", _profile("junk.npy"), r"junk\.npy: not a plain numeric",
         _bytes("psa_profiles", "junk.npy", b"\x93NUMPY\x01\x00" + os.urandom(64))),
    Case("safetensors-two-tensors", _profile("two.safetensors"), r"two\.safetensors: expected one tensor",
         lambda root: save_file({"a": torch.ones(4), "b": torch.ones(4)},
                                str(root / "psa_profiles" / "two.safetensors"))),
    Case("safetensors-garbage-profile", _profile("bad.safetensors"), r"bad\.safetensors: not a readable",
         _bytes("psa_profiles", "bad.safetensors", b"\xff" * 100)),
    Case("profile-wrong-size", _profile("short.npy"), r"does not fit the adapter",
         _npy("short.npy", np.ones(16, np.float32))),
    Case("profile-not-listed", _profile("nobody.json"), r"profile_name.*nobody\.json"),
    # attribute profiles (PSA Profile Policy with a file) and its widgets
    Case("attr-forbidden-string", _policy(profile_file="a_fstr.json"), r"a_fstr\.json: 'forbidden' must be a list",
         _json("psa_profiles", "a_fstr.json", {"age": 30, "forbidden": "Hate"})),
    Case("attr-unknown-key", _policy(profile_file="a_ukey.json"), r"a_ukey\.json: unknown profile key 'hobby'",
         _json("psa_profiles", "a_ukey.json", {"age": 30, "hobby": "chess"})),
    Case("attr-age-text", _policy(profile_file="a_age.json"), r"a_age\.json: 'age' must be a whole number",
         _json("psa_profiles", "a_age.json", {"age": "thirty"})),
    Case("attr-age-range", _policy(profile_file="a_old.json"), r"a_old\.json: age must be a whole number 0–120",
         _json("psa_profiles", "a_old.json", {"age": 200})),
    Case("attr-gender", _policy(profile_file="a_gender.json"), r"a_gender\.json: unknown gender 'robot'",
         _json("psa_profiles", "a_gender.json", {"gender": "robot"})),
    Case("attr-overlap", _policy(profile_file="a_both.json", forbidden_source="explicit / from file"),
         r"a_both\.json: categories both forbidden and allowed",
         _json("psa_profiles", "a_both.json", {"forbidden": ["Hate"], "allowed": ["Hate"]})),
    Case("attr-empty", _policy(profile_file="a_empty.json"), r"a_empty\.json: empty profile",
         _json("psa_profiles", "a_empty.json", {})),
    Case("attr-broken-json", _policy(profile_file="a_broken.json"), r"a_broken\.json: cannot read profile JSON",
         _bytes("psa_profiles", "a_broken.json", b"{age: 3")),
    Case("widget-explicit-empty", _policy(forbidden_source="explicit / from file", forbidden=""),
         r"forbidden_source is 'explicit' but no categories"),
    Case("widget-unknown-category", _policy(forbidden_source="explicit / from file", forbidden="Hat"),
         r"unknown forbidden category 'Hat'"),
    Case("widget-gender-not-listed", _policy(gender="robot"), r"gender.*robot"),
    Case("widget-age-too-high", _policy(age=500), r"age.*500"),
    Case("sage-user-missing", lambda: base_prompt(profile={"5": {"class_type": "PSASageUser",
                                                                 "inputs": {"user_id": 4242}}}),
         r"no embedding for Sage user 0004242"),
    # LLM folders and templates
    Case("llm-bad-config", _llm(llm_name="broken_llm"), r"broken_llm/config\.json cannot be read",
         _llm_folder("broken_llm", b"{not json")),
    Case("llm-hidden-size-text", _llm(llm_name="texty_llm"), r"texty_llm/config\.json: hidden_size must be a whole number from 1 to",
         _llm_folder("texty_llm", b'{"hidden_size": "big"}')),
    Case("llm-size-mismatch", _llm(embedding_size=3584), rf"{LLM_NAME} has hidden size 32, but the adapter expects"),
    Case("llm-not-listed", _llm(llm_name="../../etc"), r"llm_name"),
    Case("template-placeholders", _llm(template="short.txt"), r"short\.txt is missing the placeholders",
         _bytes("LLM", "short.txt", b"Describe <<AGE>> only.")),
    Case("template-not-utf8", _llm(template="latin.txt"), r"latin\.txt: the template is not UTF-8",
         _bytes("LLM", "latin.txt", "Älter <<AGE>>".encode("latin-1"))),
    *[_hostile_llm_case(n) for n in ("llm_tpl_loop", "llm_tpl_sandbox", "llm_pickle_only", "llm_auto_map",
                                      "llm_unknown_arch")],
    Case("llm-undecided-no-prompt", lambda: _with(base_prompt(adapter="psa_llm32.safetensors", profile=policy_profile(
        "llm", forbidden_source="LLM (needs PSA Encode Profile + category prompt)")), "5", category_prompt=""),
        r"forbidden categories are undecided"),
    # batch shapes
    Case("batch-size-mismatch", _batch("demo_child.json", "demo_teen.json", 3),
         r"2 profiles were given for a latent batch of 3"),
    Case("batch-mixed-sizes", _batch("demo_child.json", "short.npy", 2), r"different embedding sizes"),
    # sampler settings
    Case("sampler-window-reversed", _sampler(start_percent=0.8, end_percent=0.2), r"must not exceed end_percent"),
    Case("sampler-steps-zero", _sampler(steps=0), r"steps"),
    Case("sampler-scale-negative", _sampler(psa_scale=-1.0), r"psa_scale"),
    Case("sampler-name", _sampler(sampler_name="warp_drive"), r"sampler_name.*warp_drive"),
    # node links
    Case("link-wrong-type", _relink("7", "profile", ["1", 0]), r"profile|PSA_PROFILE"),
    Case("link-missing-node", _relink("7", "profile", ["99", 0]), r"99|profile"),
    Case("link-missing-input", _relink("7", "profile", None), r"Required input is missing.*profile|profile"),
]


def _outputs(server) -> set[Path]:
    return set(server.output_dir.rglob("*")) if server.output_dir.exists() else set()


def _cheap_good_prompt(scale: float) -> dict:
    """Loader → patcher → profile → PSA Apply Profile → Preview Any: the PSA path without sampling.

    The text encodings are previewed too, so that they stay in ComfyUI's cache for the next case.
    """
    prompt = base_prompt()
    prompt = {k: prompt[k] for k in ("1", "2", "3", "4", "5", "6")}
    prompt["32"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["3", 0],
                                                                    "conditioning_2": ["4", 0]}}
    prompt["33"] = {"class_type": "PreviewAny", "inputs": {"source": ["32", 0]}}
    prompt["34"] = {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}}
    prompt["30"] = {"class_type": "PSAApplyProfile", "inputs": {"model": ["2", 0], "profile": ["5", 0],
                                                                 "psa_scale": scale, "start_percent": 0.0,
                                                                 "end_percent": 1.0}}
    prompt["31"] = {"class_type": "PreviewAny", "inputs": {"source": ["30", 0]}}
    return prompt


def _error_of(server, prompt: dict) -> str:
    try:
        prompt_id = server.queue(prompt)
    except ServerError as exc:  # rejected at validation: the node errors come back from /prompt
        return str(exc)
    try:
        server.wait(prompt_id, timeout=600)
    except ServerError as exc:
        return str(exc)
    raise AssertionError("the bad prompt ran without an error")


def test_corpus_has_at_least_40_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.id for c in CASES])
def test_bad_input(index, hostile_server, hostile_models_dir):
    case = CASES[index]
    case.files(hostile_models_dir)
    before = _outputs(hostile_server)
    message = _error_of(hostile_server, case.prompt())
    assert re.search(case.expect, message, re.S), message
    assert not any(word in message for word in UNSAFE_ADVICE), message
    assert hostile_server.proc.poll() is None, "the server died"
    assert _outputs(hostile_server) == before, "an output file was written"
    hostile_server.run(_cheap_good_prompt(0.5 + index / 1000), timeout=600)
    assert not Path("/tmp/psa_pwned").exists()


def test_a_hung_template_does_not_hold_the_queue(hostile_server, hostile_models_dir):
    """A never-ending chat template is refused and the good prompt queued behind it runs (it used to wait forever)."""
    _hostile_llm("llm_tpl_loop")(hostile_models_dir)
    hostile_id = hostile_server.queue(_llm(llm_name="llm_tpl_loop")())
    good_id = hostile_server.queue(_cheap_good_prompt(0.25))
    with pytest.raises(ServerError, match=r"llm_tpl_loop/chat_template\.jinja: rendering did not finish"):
        hostile_server.wait(hostile_id, timeout=300)
    hostile_server.wait(good_id, timeout=120)


def _choices(spec: list) -> list:
    """A combo's choices: ``[choices, {...}]`` (V1 form) or ``["COMBO", {"options": choices}]`` (node schema)."""
    return spec[1]["options"] if spec[0] == "COMBO" else spec[0]


def test_listing_survives_every_bad_file(hostile_server, hostile_models_dir):
    """After the corpus (and a few listing-only oddities) every PSA node still lists its inputs."""
    profiles = hostile_models_dir / "psa_profiles"
    (profiles / "dir.json").mkdir(exist_ok=True)
    os.symlink("/dev/zero", profiles / "zero.json") if not (profiles / "zero.json").is_symlink() else None
    odd = os.fsencode(profiles) + b"/name\xff.json"
    if not os.path.exists(odd):
        open(odd, "wb").close()
    for name in CASES:  # every file a case wrote is in the folders now
        name.files(hostile_models_dir)
    info = hostile_server.get_json("/object_info")
    psa = {k for k in info if k.startswith("PSA")}
    assert {"PSAProfilePolicy", "PSALoadProfile", "PSAModelPatcher", "PSAEncodeProfileLLM",
            "PSASaveImageRedacted"} <= psa
    policy_files = _choices(info["PSAProfilePolicy"]["input"]["required"]["profile_file"])
    assert {"a_broken.json", "broken.json", "deep.json", "huge.json", "pipe.json", "zero.json"} <= set(policy_files)
    assert "demo_child.json" not in policy_files  # a well-formed embedding profile belongs to PSA Load Profile
    assert not any("\udcff" in name for name in _choices(info["PSALoadProfile"]["input"]["required"]["profile_name"]))


def test_a_full_good_prompt_after_the_corpus(hostile_server):
    before = _outputs(hostile_server)
    entry = hostile_server.run(base_prompt(seed=5), timeout=900)
    assert len(hostile_server.images(entry)) == 1
    assert len(_outputs(hostile_server) - before) >= 1
