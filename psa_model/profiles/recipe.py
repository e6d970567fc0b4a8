"""How a profile becomes an embedding: the encoding recipe (docs/profiles.md, "The encoding recipe").

The published Sage embeddings were made by one fixed recipe; an adapter trained on them expects
embeddings made the same way. An :class:`EncodingRecipe` names every choice that changes the
numbers, so it can be shown to the user and be part of the embedding-cache key:

- ``pooling`` — ``"mean"`` (published): masked mean of the last hidden layer (after the final
  norm) over the non-padding tokens; ``"sum"`` (the reference's later *pipeline variant*):
  masked sum, about token-count times larger.
- ``dtype`` — ``"model"`` (published): run the LLM and pool in the dtype its ``config.json``
  names (bfloat16 for Qwen2.5-7B-Instruct), also on CPU, then cast to float32;
  ``"float32"``: run and pool in float32.
- ``category_notation`` — ``"python-list"`` (published): ``<<BANNED>>``/``<<ALLOWED>>`` written as
  the users table writes them, ``['Propaganda', 'Sexuality']`` (alphabetical, ``[]`` when empty);
  ``"comma"``: ``Sexuality, Propaganda`` in the project's category order, ``none`` when empty;
  ``"forbidden-only"``: ``<<BANNED>>`` as ``"comma"``, ``<<ALLOWED>>`` written ``every other
  category`` (``every category`` when nothing is forbidden), so only the forbidden categories'
  names occur in the text and a pooled embedding carries them (docs/profiles.md, "Options").
- ``religion_none`` — the text for the religion ``None``: ``"nan"`` (published: the reference read
  the table with pandas 2.2, which takes the cell ``None`` for a missing value, so its prompts say
  ``nan``) or ``"None"`` (the table's own spelling).

Every other placeholder gets the table's spelling (``18``, ``adolescents``, ``male``, ...).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .vocabulary import ProfileError
from .schema import StructuredProfile

POOLINGS = ("mean", "sum")
DTYPES = ("model", "float32")
CATEGORY_NOTATIONS = ("python-list", "comma", "forbidden-only")
OTHER_CATEGORIES = "every other category"
ALL_CATEGORIES = "every category"
RELIGION_NONE = ("nan", "None")
UNKNOWN = "unknown"
_DTYPE_NAMES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class EncodingRecipe:
    """The choices that decide an LLM profile embedding (module docstring; docs/profiles.md)."""

    pooling: str = "mean"
    dtype: str = "model"
    category_notation: str = "python-list"
    religion_none: str = "nan"

    def __post_init__(self) -> None:
        for field, value, allowed in (("pooling", self.pooling, POOLINGS), ("dtype", self.dtype, DTYPES),
                                      ("category_notation", self.category_notation, CATEGORY_NOTATIONS),
                                      ("religion_none", self.religion_none, RELIGION_NONE)):
            if value not in allowed:
                raise ProfileError(f"unknown {field} {value!r} for the encoding recipe; choose one of {list(allowed)}")

    def is_published(self) -> bool:
        return self == PUBLISHED_RECIPE

    def identity(self, compute_dtype: torch.dtype) -> str:
        """Stable text for the cache key: every field plus the dtype actually computed in."""
        return (f"pooling={self.pooling};dtype={self.dtype}:{dtype_name(compute_dtype)};"
                f"categories={self.category_notation};religion_none={self.religion_none}")

    def describe(self, compute_dtype: torch.dtype) -> str:
        """One line for a node's summary."""
        name = "published recipe" if self.is_published() else "NOT the published recipe"
        pooling = "mean" if self.pooling == "mean" else "sum (pipeline variant)"
        notation = {"python-list": "Python lists", "comma": "comma-separated",
                    "forbidden-only": "forbidden only (allowed as 'every other category')"}[self.category_notation]
        return (f"{name}: {pooling} pooling in {dtype_name(compute_dtype)}, categories as {notation}, "
                f"religion None written {self.religion_none!r}")


PUBLISHED_RECIPE = EncodingRecipe()
PIPELINE_RECIPE = EncodingRecipe(pooling="sum")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def model_dtype(folder: Path) -> torch.dtype:
    """The dtype a model folder's ``config.json`` names (``torch_dtype`` / ``dtype``); float32 if none."""
    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    for source in (config, config.get("text_config") or {}):
        name = source.get("torch_dtype") or source.get("dtype")
        if isinstance(name, str) and name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
    return torch.float32


def compute_dtype(folder: Path, recipe: EncodingRecipe) -> torch.dtype:
    """The dtype the recipe runs the model of ``folder`` in."""
    return model_dtype(folder) if recipe.dtype == "model" else torch.float32


# --- template values --------------------------------------------------------------------------
def categories_text(categories, notation: str) -> str:
    """``<<BANNED>>``/``<<ALLOWED>>`` text: ``['A', 'B']`` (alphabetical) or ``A, B`` (project order)."""
    if categories is None:
        return UNKNOWN
    if notation == "python-list":
        return "[" + ", ".join(f"'{c}'" for c in sorted(categories)) + "]"
    return ", ".join(categories) if categories else "none"


def allowed_text(profile: StructuredProfile, notation: str) -> str:
    """``<<ALLOWED>>`` text; with ``"forbidden-only"`` no category is named (module docstring)."""
    if notation == "forbidden-only" and profile.allowed is not None:
        return ALL_CATEGORIES if not profile.forbidden else OTHER_CATEGORIES
    return categories_text(profile.allowed, notation)


def template_values(profile: StructuredProfile, recipe: EncodingRecipe = PUBLISHED_RECIPE) -> dict[str, str]:
    """Placeholder → text for one profile (missing attributes: ``unknown``)."""
    religion = profile.religion
    if religion == "None":
        religion = recipe.religion_none
    return {
        "<<AGE>>": str(profile.age) if profile.age is not None else UNKNOWN,
        "<<AGE_GROUP>>": profile.age_group or UNKNOWN,
        "<<GENDER>>": profile.gender or UNKNOWN,
        "<<RELIGION>>": religion or UNKNOWN,
        "<<MENTAL>>": profile.mental_condition or UNKNOWN,
        "<<PHYSICAL>>": profile.physical_condition or UNKNOWN,
        "<<BANNED>>": categories_text(profile.forbidden, recipe.category_notation),
        "<<ALLOWED>>": allowed_text(profile, recipe.category_notation),
    }


# --- pooling ----------------------------------------------------------------------------------
def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """``[B, L, H]`` last hidden states → ``[B, H]`` float32 (docs/profiles.md, "The encoding recipe").

    The masked sum (and, for ``"mean"``, the division by the token count) run in ``hidden``'s
    dtype — bfloat16 for a bfloat16 model, as the published embeddings were made — and only the
    result is cast to float32. The mask stays an integer tensor, so the token count is exact.
    """
    if pooling not in POOLINGS:
        raise ProfileError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
    mask = attention_mask[..., None].to(torch.long)
    pooled = (hidden * mask).sum(dim=1)
    if pooling == "mean":
        pooled = pooled / mask.sum(dim=1)
    return pooled.to(torch.float32)


# --- choices as a node shows them (first = published) -----------------------------------------
POOLING_CHOICES = {"mean (published)": "mean", "sum (pipeline variant)": "sum"}
DTYPE_CHOICES = {"model dtype (published)": "model", "float32": "float32"}
NOTATION_CHOICES = {"Python list, alphabetical (published)": "python-list", "comma-separated": "comma",
                    "forbidden only (categories legible)": "forbidden-only"}
RELIGION_NONE_CHOICES = {"nan (as the published run read the table)": "nan", "None (table spelling)": "None"}


def recipe_from_choices(pooling: str | None = None, precision: str | None = None, category_notation: str | None = None,
                        religion_none: str | None = None) -> EncodingRecipe:
    """A recipe from the node's choice labels (or the plain values); ``None`` = the published choice."""
    def pick(value, choices, field):
        if value is None:
            return next(iter(choices.values()))
        if value in choices:
            return choices[value]
        if value in choices.values():
            return value
        raise ProfileError(f"unknown {field} {value!r}; choose one of {list(choices)}")

    return EncodingRecipe(pick(pooling, POOLING_CHOICES, "pooling"), pick(precision, DTYPE_CHOICES, "precision"),
                          pick(category_notation, NOTATION_CHOICES, "category notation"),
                          pick(religion_none, RELIGION_NONE_CHOICES, "religion None spelling"))
