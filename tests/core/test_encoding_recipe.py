"""The published encoding recipe without a model (docs/profiles.md, "The encoding recipe"): template values, pooling, recipe identity, norm check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psa_model.profiles.embedding_check import PUBLISHED_NORM_RANGE, describe_with_norms, norm_report, norm_warning
from psa_model.profiles.llm_encoder import fill_template
from psa_model.profiles.profile import ProfileLabel, PSAProfile
from psa_model.profiles.vocabulary import ProfileError
from psa_model.profiles.recipe import (PIPELINE_RECIPE, PUBLISHED_RECIPE, EncodingRecipe, pool, recipe_from_choices,
                                       template_values)
from psa_model.profiles.schema import StructuredProfile
from support.sage_rows import TEMPLATE, sage_rows, table_filled


def test_filled_template_is_the_tables_strings_in_the_template():
    rows = sage_rows()
    for row in rows:
        assert fill_template(TEMPLATE, StructuredProfile.from_sage_row(row)) == table_filled(TEMPLATE, row)
    # Hand-written for one row, so the helper above is checked too.
    assert fill_template(TEMPLATE, StructuredProfile.from_sage_row(rows[2])) == (
        "Age 18 (adolescents), male, religion nan, mental anxiety, physical hearing impairment.\n"
        "Forbidden: ['Self-Harm', 'Sexuality', 'Shocking']\n"
        "Allowed: ['Harassment', 'Hate', 'Propaganda', 'Violence']\n")


def test_every_sage_row_fills_to_its_table_strings(shared_dir):
    rows = sage_rows((shared_dir / "data" / "sage_users.csv").read_text())
    assert len(rows) > 900
    for row in rows:
        assert fill_template(TEMPLATE, StructuredProfile.from_sage_row(row)) == table_filled(TEMPLATE, row)


def test_other_notations():
    profile = StructuredProfile.from_sage_row(sage_rows()[2])
    plain = template_values(profile, EncodingRecipe(category_notation="comma", religion_none="None"))
    assert plain["<<BANNED>>"] == "Self-Harm, Sexuality, Shocking" and plain["<<RELIGION>>"] == "None"
    assert plain["<<ALLOWED>>"] == "Hate, Harassment, Violence, Propaganda"  # the project's category order
    nothing = template_values(StructuredProfile.create(age=30, forbidden=[]), EncodingRecipe(category_notation="comma"))
    assert nothing["<<BANNED>>"] == "none" and nothing["<<GENDER>>"] == "unknown"
    assert template_values(StructuredProfile.create(age=30, forbidden=[]))["<<BANNED>>"] == "[]"


def test_pool_mean_and_sum_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])  # third token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "sum").tolist() == [[4.0, 8.0]]
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 4.0]]
    # bf16 in → computed in bf16 → float32 out (values on the bf16 grid, like the published files).
    noisy = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out = pool(noisy, torch.tensor([[1] * 7, [1] * 4 + [0] * 3]), "mean")
    assert out.dtype == torch.float32 and torch.equal(out, out.to(torch.bfloat16).float())
    with pytest.raises(ProfileError, match="pooling"):
        pool(hidden, mask, "max")


def test_recipe_identity_and_choices():
    recipes = (PUBLISHED_RECIPE, PIPELINE_RECIPE, EncodingRecipe(dtype="float32"),
               EncodingRecipe(category_notation="comma"), EncodingRecipe(religion_none="None"))
    identities = {r.identity(torch.bfloat16) for r in recipes}
    assert len(identities) == 5
    assert PUBLISHED_RECIPE.identity(torch.bfloat16) != PUBLISHED_RECIPE.identity(torch.float32)
    assert recipe_from_choices() == PUBLISHED_RECIPE
    assert recipe_from_choices("sum (pipeline variant)", "float32") == EncodingRecipe(pooling="sum", dtype="float32")
    assert "published recipe: mean pooling in bfloat16" in PUBLISHED_RECIPE.describe(torch.bfloat16)
    assert "NOT the published" in PIPELINE_RECIPE.describe(torch.bfloat16)
    with pytest.raises(ProfileError, match="pooling"):
        recipe_from_choices("median")


def test_published_embeddings_are_in_range_and_a_sum_is_not(shared_dir):
    low, high = PUBLISHED_NORM_RANGE
    for uid in ("0000001", "0000002"):
        vector = torch.from_numpy(np.load(shared_dir / "data" / "sage_embeddings" / f"{uid}.npy"))
        norm = float(vector.norm())
        assert 130 < norm < 145 and low < norm < high
        assert norm_warning(norm, 3584) is None
        assert "WARNING" not in norm_report(vector[None])
        summed = norm_report(vector[None] * 200)  # what ~200 summed tokens look like
        assert "WARNING" in summed and "pipeline variant" in summed


def test_norm_report_lines():
    vector = torch.zeros(3584)
    vector[0] = 138.0
    profile = PSAProfile(torch.stack([vector, vector * 10]), (ProfileLabel("a"), ProfileLabel("b")))
    text = describe_with_norms(profile)
    assert "a: norm 138.0" in text and "b: norm 1380.0" in text and text.count("WARNING") == 1
    assert norm_warning(30.0, 3584) is not None and norm_warning(30.0, 32) is None
    assert "no published reference for size 32" in norm_report(torch.ones(1, 32))
