"""The encoder follows the published recipe (docs/profiles.md, "The encoding recipe"): tiny random Qwen2 + the real Qwen2.5 tokenizer.

The expected embeddings are computed here independently, the way the reference's embedding script
does it: the table's strings put into the template, the tokenizer's chat template with a
generation prompt, one forward pass in the model's own dtype, masked mean of the last hidden layer.
"""
from __future__ import annotations

import pytest
import torch

from psa_model.profiles.embedding_cache import EmbeddingCache, encode_with_cache
from psa_model.profiles.llm_encoder import ProfileEncoder
from psa_model.profiles.recipe import EncodingRecipe, compute_dtype
from psa_model.profiles.schema import StructuredProfile
from benchmarks.tiny_llm import HIDDEN, build_tiny_qwen2
from support.sage_rows import TEMPLATE, sage_rows, table_filled


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, comfy_host):
    root = tmp_path_factory.mktemp("llm_recipe")
    return {torch.float32: build_tiny_qwen2(root / "tiny_fp32", seed=1),
            torch.bfloat16: build_tiny_qwen2(root / "tiny_bf16", seed=1, dtype=torch.bfloat16)}


@pytest.fixture(scope="module")
def encoders(tiny):
    """One loaded encoder per dtype (loading is the slow part); tests change ``.recipe`` as needed."""
    loaded = {dtype: ProfileEncoder(folder, TEMPLATE) for dtype, folder in tiny.items()}
    yield loaded
    for encoder in loaded.values():
        encoder.close()


@pytest.fixture(scope="module")
def reference(tiny):
    """Independent computation of the recipe: (dtype, rows, padding side) → (mean embeddings, token counts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny[torch.float32]), local_files_only=True)
    models = {dtype: AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype="auto").eval()
              for dtype, folder in tiny.items()}

    def compute(dtype, rows, padding_side: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert next(models[dtype].parameters()).dtype == dtype  # "auto" = the dtype config.json names
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": table_filled(TEMPLATE, row)}],
                                               tokenize=False, add_generation_prompt=True) for row in rows]
        tokenizer.padding_side = padding_side
        inputs = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            last = models[dtype](**inputs, output_hidden_states=True).hidden_states[-1]
        mask = inputs["attention_mask"].unsqueeze(-1)
        return ((last * mask).sum(dim=1) / mask.sum(dim=1)).to(torch.float32), mask.sum(dim=(1, 2))

    return compute


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_encoder_equals_the_recipe_computed_independently(encoders, reference, dtype):
    rows = sage_rows()
    encoder = encoders[dtype]
    encoder.recipe = EncodingRecipe()
    assert encoder.dtype == dtype  # the model's dtype, on CPU too
    ours = encoder.encode([StructuredProfile.from_sage_row(r) for r in rows], batch_size=len(rows))
    assert ours.dtype == torch.float32 and ours.shape == (len(rows), HIDDEN)
    same_batch, counts = reference(dtype, rows, "right")
    assert len(set(counts.tolist())) > 1  # the batch really is padded
    assert torch.equal(ours, same_batch)
    if dtype == torch.bfloat16:
        assert torch.equal(ours, ours.to(torch.bfloat16).float())  # on the bf16 grid, like the published files
    # The reference padded on the left; rotary positions make that a rounding difference only.
    left, _ = reference(dtype, rows, "left")
    tolerance = 1e-5 if dtype == torch.float32 else 2 ** -8  # bf16: about one unit in the last place at 0.5
    torch.testing.assert_close(ours, left, rtol=tolerance, atol=tolerance)


def test_sum_is_mean_times_token_count(encoders, reference, tiny):
    rows = sage_rows()
    profiles = [StructuredProfile.from_sage_row(r) for r in rows]
    encoder = encoders[torch.float32]
    encoder.recipe = EncodingRecipe()
    mean = encoder.encode(profiles, batch_size=len(rows))
    encoder.recipe = EncodingRecipe(pooling="sum")
    summed = encoder.encode(profiles, batch_size=len(rows))
    _, counts = reference(torch.float32, rows, "right")
    assert counts.min() > 50
    torch.testing.assert_close(summed, mean * counts[:, None].float(), rtol=1e-5, atol=1e-4)
    assert compute_dtype(tiny[torch.bfloat16], EncodingRecipe()) == torch.bfloat16
    assert compute_dtype(tiny[torch.bfloat16], EncodingRecipe(dtype="float32")) == torch.float32


def test_cache_is_never_shared_across_recipes(encoders, tiny, tmp_path):
    folder = tiny[torch.float32]
    encoder = encoders[torch.float32]
    cache = EmbeddingCache(tmp_path / "cache")
    profiles = [StructuredProfile.from_sage_row(sage_rows()[2])]
    calls: list[EncodingRecipe] = []

    def encoder_for(recipe):
        def encode(batch):
            calls.append(recipe)
            encoder.recipe = recipe
            return encoder.encode(batch)
        return encode

    recipes = [EncodingRecipe(), EncodingRecipe(pooling="sum"), EncodingRecipe(dtype="float32"),
               EncodingRecipe(category_notation="comma"), EncodingRecipe(religion_none="None")]
    results = []
    for recipe in recipes:
        embedding, hits = encode_with_cache(folder, TEMPLATE, profiles, cache, encoder_for(recipe), recipe=recipe)
        assert hits == 0
        results.append(embedding)
    assert len(cache) == len(recipes) and calls == recipes
    # Each text choice changes the embedding (fp32 model: "model" and "float32" compute alike, but
    # the keys still name both choices).
    for i in (1, 3, 4):
        assert not torch.allclose(results[0], results[i])
    for recipe, expected in zip(recipes, results):
        again, hits = encode_with_cache(folder, TEMPLATE, profiles, cache, encoder_for(recipe), recipe=recipe)
        assert hits == 1 and torch.equal(again, expected)
    assert len(calls) == len(recipes)


def test_nodes_report_recipe_and_norm(tiny, tmp_path, monkeypatch):
    import importlib

    import folder_paths
    import numpy as np

    from devkit.pack_loader import PACK_MODULE, load_pack

    load_pack()
    encode_nodes = importlib.import_module(f"{PACK_MODULE}.nodes.profile_encode_nodes")
    profile_nodes = importlib.import_module(f"{PACK_MODULE}.nodes.profile_nodes")
    llm_root = tiny[torch.bfloat16].parent
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "psa_llm", ([str(llm_root)], set()))
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(tmp_path / "user"))
    spec = StructuredProfile.from_sage_row(sage_rows()[1], name="row 2")
    def encode(**inputs):
        return encode_nodes.PSAEncodeProfileLLM.execute(**inputs).result

    default = dict(profile_spec=spec, llm_name="tiny_bf16", template=encode_nodes.DEFAULT_TEMPLATE_NAME,
                   embedding_size=HIDDEN, cache="use")
    profile, summary = encode(**default)
    assert "recipe: published recipe: mean pooling in bfloat16, categories as Python lists" in summary
    assert "model: tiny_bf16 (identity " in summary and "template sha256 " in summary
    assert f"row 2: norm {float(profile.embeddings.norm()):.1f}" in summary
    assert "no published reference for size 32" in summary and "(encoded)" in summary
    summed, sum_summary = encode(**default, pooling="sum (pipeline variant)", precision="float32")
    assert "(encoded)" in sum_summary and "sum (pipeline variant) pooling in float32" in sum_summary
    assert "NOT the published recipe" in sum_summary
    assert float(summed.embeddings.norm()) > 20 * float(profile.embeddings.norm())
    _, again = encode(**default)
    assert "(cache hit)" in again

    # PSA Load Profile reports the norm and warns off the published range (size 3584).
    profiles_dir = tmp_path / "psa_profiles"
    profiles_dir.mkdir()
    vector = np.random.default_rng(0).standard_normal(3584).astype(np.float32)
    np.save(profiles_dir / "like_published.npy", vector / np.linalg.norm(vector) * 138.0)
    np.save(profiles_dir / "summed.npy", vector / np.linalg.norm(vector) * 138.0 * 180)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "psa_profiles", ([str(profiles_dir)], {".npy"}))
    _, fine = profile_nodes.PSALoadProfile.execute("like_published.npy").result
    _, off = profile_nodes.PSALoadProfile.execute("summed.npy").result
    assert "like_published: norm 138.0" in fine and "WARNING" not in fine
    assert "summed: norm 24840.0" in off and "WARNING" in off and "179x" in off
