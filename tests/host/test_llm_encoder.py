"""LLM profile encoder with a tiny random Qwen2 and the real Qwen2.5 tokenizer from ComfyUI (README: Profiles from attributes; docs/profiles.md, "The encoding recipe")."""
from __future__ import annotations

import pytest
import torch

from psa_model.profiles import llm_encoder
from psa_model.profiles.embedding_cache import EmbeddingCache, encode_with_cache
from psa_model.profiles.llm_encoder import LLMEncoderError, ProfileEncoder, check_model_folder, fill_template, load_template
from psa_model.profiles.schema import StructuredProfile
from benchmarks.tiny_llm import HIDDEN, build_tiny_qwen2

IM_START, IM_END, ENDOFTEXT, NEWLINE = 151644, 151645, 151643, 198


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, comfy_host):
    root = tmp_path_factory.mktemp("llm")
    return {"chat": build_tiny_qwen2(root / "tiny_qwen2"),
            "nochat": build_tiny_qwen2(root / "tiny_qwen2_nochat", keep_chat_template=False)}


PROFILES = [
    StructuredProfile.create(age=20, gender="male", religion="Christianity", mental_condition="depression",
                             physical_condition="healthy", forbidden=["Propaganda", "Self-Harm", "Sexuality", "Shocking"]),
    StructuredProfile.create(age=5, forbidden=list(("Hate", "Harassment", "Violence", "Self-Harm", "Sexuality",
                                                    "Shocking", "Propaganda"))),
    StructuredProfile.create(age=97, gender="female", religion="None", mental_condition="sexual assault",
                             physical_condition="intellectual disability", forbidden=[]),
]


def _recording_loader(monkeypatch, seen: list):
    real = llm_encoder.load_model

    def load(folder, device, dtype):
        model = real(folder, device, dtype)
        model.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone())),
            with_kwargs=True)
        return model

    monkeypatch.setattr(llm_encoder, "load_model", load)


def test_token_sequence_uses_the_folders_chat_template_with_right_padding(tiny, monkeypatch):
    seen: list = []
    _recording_loader(monkeypatch, seen)
    with ProfileEncoder(tiny["chat"], template="A <<AGE>> <<AGE_GROUP>> <<GENDER>> <<RELIGION>> <<MENTAL>> "
                                               "<<PHYSICAL>> <<BANNED>> <<ALLOWED>>") as enc:
        assert enc.dtype == torch.float32 or torch.cuda.is_available()
        enc.encode([PROFILES[0], PROFILES[2]], batch_size=2)
        tok = enc.tokenizer
    ids, mask = seen[0]
    # Hand-written expected text: the ComfyUI tokenizer's own (Qwen2.5-VL style) chat template.
    # Categories in the users table's notation (alphabetical Python lists); religion None as the
    # published run wrote it ("nan").
    texts = ["A 20 young adults male Christianity depression healthy ['Propaganda', 'Self-Harm', 'Sexuality', "
             "'Shocking'] ['Harassment', 'Hate', 'Violence']",
             "A 97 long-lived elderly female nan sexual assault intellectual disability [] ['Harassment', 'Hate', "
             "'Propaganda', 'Self-Harm', 'Sexuality', 'Shocking', 'Violence']"]
    expected = [tok.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           f"{t}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False) for t in texts]
    lengths = [len(e) for e in expected]
    assert lengths[0] != lengths[1]
    assert ids.shape == (2, max(lengths))
    for row, exp, n in zip(range(2), expected, lengths):
        assert ids[row, :n].tolist() == exp
        assert exp[0] == IM_START and exp[-3] == IM_START and exp[-1] == NEWLINE  # ... <|im_start|>assistant\n
        assert exp.count(IM_START) == 3 and exp.count(IM_END) == 2
        assert mask[row, :n].tolist() == [1] * n
        assert mask[row, n:].tolist() == [0] * (ids.shape[1] - n)  # padding on the right
        assert ids[row, n:].tolist() == [ENDOFTEXT] * (ids.shape[1] - n)


def test_fallback_chat_template_when_tokenizer_has_none(tiny, monkeypatch):
    seen: list = []
    _recording_loader(monkeypatch, seen)
    with ProfileEncoder(tiny["nochat"]) as enc:
        enc.encode_prompts(["hello"])
        tok = enc.tokenizer
    expected = tok.encode("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                          "assistant.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
                          add_special_tokens=False)
    assert seen[0][0][0].tolist() == expected


def test_mean_pooling_and_batched_equals_one_by_one(tiny):
    from transformers import AutoModelForCausalLM

    with ProfileEncoder(tiny["chat"]) as enc:
        batched = enc.encode(PROFILES, batch_size=3)
        single = torch.cat([enc.encode([p], batch_size=1) for p in PROFILES])
        tok = enc.tokenizer
        prompt = fill_template(enc.template, PROFILES[1])
    assert batched.shape == (3, HIDDEN) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-4)
    # Independent computation for one profile: unpadded, straight through transformers.
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  tokenize=True, return_dict=True, return_tensors="pt")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(tiny["chat"]), local_files_only=True, dtype=torch.float32)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    torch.testing.assert_close(single[1], hidden.mean(0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(single[1], hidden.sum(0), atol=1e-2)


def test_cache_hit_is_identical_and_does_not_load_the_model(tiny, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache")
    template = load_template()

    def encode(profiles):
        with ProfileEncoder(tiny["chat"], template) as enc:
            return enc.encode(profiles)

    first, hits = encode_with_cache(tiny["chat"], template, PROFILES[:2], cache, encode)
    assert hits == 0 and len(cache) == 2

    def boom(*args, **kwargs):
        raise AssertionError("model loaded on a cache hit")

    monkeypatch.setattr(llm_encoder, "load_model", boom)
    again, hits = encode_with_cache(tiny["chat"], template, PROFILES[:2], cache, encode)
    assert hits == 2 and torch.equal(first, again)
    # A different template is a different key → a miss → the loader is called.
    with pytest.raises(AssertionError, match="model loaded"):
        encode_with_cache(tiny["chat"], template + "\n", PROFILES[:1], cache, encode)
    assert cache.clear() == 2 and len(cache) == 0


def test_bad_folders_and_templates(tiny, tmp_path):
    with pytest.raises(LLMEncoderError, match="not found"):
        check_model_folder(tmp_path / "nope")
    with pytest.raises(LLMEncoderError, match="hidden size 32.*3584"):
        ProfileEncoder(tiny["chat"], expected_dim=3584)
    assert check_model_folder(tiny["chat"], HIDDEN) == HIDDEN
    with pytest.raises(LLMEncoderError, match="<<MENTAL>>"):
        ProfileEncoder(tiny["chat"], template="<<AGE>> <<AGE_GROUP>> <<GENDER>> <<RELIGION>> <<PHYSICAL>> "
                                              "<<BANNED>> <<ALLOWED>>")
    no_categories = StructuredProfile.create(age=30)
    with pytest.raises(LLMEncoderError, match="forbidden categories"):
        fill_template(load_template(), no_categories)


def test_nodes_policy_encode_nearest(tiny, tmp_path, shared_dir, monkeypatch, fixture_paths):
    import importlib

    import folder_paths

    from devkit.pack_loader import PACK_MODULE, load_pack

    load_pack()
    nodes_mod = importlib.import_module(f"{PACK_MODULE}.nodes.profile_encode_nodes")
    profiles_dir = tmp_path / "psa_profiles"
    (profiles_dir / "sage_embeddings").mkdir(parents=True)
    (profiles_dir / "sage_users.csv").write_bytes((shared_dir / "data" / "sage_users.csv").read_bytes())
    (profiles_dir / "sage_embeddings" / "0000002.npy").write_bytes(
        (shared_dir / "data" / "sage_embeddings" / "0000002.npy").read_bytes())
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "psa_profiles", ([str(profiles_dir)], {".json", ".npy"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "psa_llm", ([str(tiny["chat"].parent)], set()))
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path / "user"))

    spec, forbidden, allowed, _ = nodes_mod.PSAProfilePolicy.execute(
        nodes_mod.NO_FILE, 15, "male", "Islam", "healthy", "healthy", "rule policy", "")
    assert forbidden == "Hate, Violence, Self-Harm, Sexuality, Propaganda" and allowed == "Harassment, Shocking"
    assert "tiny_qwen2" in nodes_mod.llm_folders()
    profile, summary = nodes_mod.PSAEncodeProfileLLM.execute(spec, "tiny_qwen2", nodes_mod.DEFAULT_TEMPLATE_NAME,
                                                              HIDDEN, "use")
    assert profile.embeddings.shape == (1, HIDDEN) and profile.labels[0].forbidden == spec.forbidden
    again, summary = nodes_mod.PSAEncodeProfileLLM.execute(spec, "tiny_qwen2", nodes_mod.DEFAULT_TEMPLATE_NAME,
                                                            HIDDEN, "use")
    assert "cache hit" in summary and torch.equal(again.embeddings, profile.embeddings)
    with pytest.raises(LLMEncoderError, match="3584"):
        nodes_mod.PSAEncodeProfileLLM.execute(spec, "tiny_qwen2", nodes_mod.DEFAULT_TEMPLATE_NAME, 3584, "use")
    sage, uid, _ = nodes_mod.PSANearestSageUser.execute(spec)
    assert uid == 2 and sage.embeddings.shape == (1, 3584)
    checkpoint = fixture_paths["sd15_tiny.safetensors"]
    _sample_with(profile, HIDDEN, checkpoint)  # the LLM path's profile drives the sampler
    _sample_with(sage, 3584, checkpoint)  # and so does the no-LLM path's


def _sample_with(profile, embed_dim, checkpoint):
    """A PSA_PROFILE is accepted by the sampler path: adapter of that embedding size, 1 step."""
    import importlib

    import comfy.sd

    from psa_model.adapter.modules import adapter_config_for_model
    from devkit.random_adapters import random_adapter
    from psa_model.adapter.layer_map import architecture, match_sites
    from psa_model.adapter.patch import attach_adapter
    from devkit.pack_loader import PACK_MODULE

    sampler_nodes = importlib.import_module(f"{PACK_MODULE}.nodes.sampler_nodes")
    base = comfy.sd.load_checkpoint_guess_config(str(checkpoint),
                                                 output_vae=False, output_clip=False)[0]
    sites = match_sites(architecture("sd15"), base.get_model_object("diffusion_model"))
    patched = attach_adapter(base, random_adapter(adapter_config_for_model("sd15", sites, embed_dim=embed_dim)))
    cond = [[torch.zeros(1, 77, 768), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = sampler_nodes.PSAKSampler.execute(patched, profile, 1.0, 0, 1, 1.0, "euler", "normal", cond, cond, latent)
    assert torch.isfinite(out[0]["samples"]).all()
