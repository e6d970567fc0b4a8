"""Every repository file the README and docs/ name exists (and every ``file::test`` names a test in it).

A reference is a path in backticks or a Markdown link target that starts with one of the
repository's own top-level folders (``models/…`` and ``output/…`` are the user's and ComfyUI's
folders, not the repository's, and are not checked).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP = ("psa_model", "nodes", "operator_mode", "training", "devkit", "toy_world", "benchmarks", "scripts", "tests",
       "docs", "workflows", ".ci")
_REFERENCE = re.compile(r"`([^`\s]+)`|\]\(([^)\s#]+)(?:#[^)]*)?\)")
_PATH = re.compile(rf"^(?:{'|'.join(re.escape(t) for t in TOP)})/[\w./*{{}}-]*(?:::[\w\[\]-]+)?$")
DOCUMENTS = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")])


def references(text: str, base: Path) -> list[str]:
    """Repository paths named in a Markdown text (link targets resolved against ``base``)."""
    found = []
    for code, link in _REFERENCE.findall(text):
        if link and not re.match(r"^[a-z]+:", link):
            link = (base / link).resolve()
            if not link.is_relative_to(REPO_ROOT):
                continue
            link = link.relative_to(REPO_ROOT).as_posix()
        candidate = (code or link).rstrip(".,;:")
        if _PATH.match(candidate):
            found.append(candidate)
    return found


def missing(reference: str) -> str | None:
    path, _, test = reference.partition("::")
    matches = list(REPO_ROOT.glob(path)) if any(c in path for c in "*{") else [REPO_ROOT / path]
    if "{" in path:  # a pattern such as layers.{i}: only the folder part is a path
        return None
    if not any(m.exists() for m in matches):
        return f"{reference}: no such file"
    if test and not re.search(rf"^\s*def {re.escape(test.split('[')[0])}\(", matches[0].read_text(), re.M):
        return f"{reference}: no such test in {path}"
    return None


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_named_files_exist(document):
    named = references(document.read_text(), document.parent)
    problems = [p for p in map(missing, named) if p]
    assert not problems, f"{document.name} names files that are not in the repository: {problems}"


def test_the_check_finds_references_and_misses():
    text = ("Run `tests/core/test_nope.py` and `devkit/fixtures.py`, see [the page](docs/profiles.md) and "
            "`tests/core/test_layering.py::test_not_there`; `models/psa_profiles/` is the user's.")
    named = references(text, REPO_ROOT)
    assert named == ["tests/core/test_nope.py", "devkit/fixtures.py", "docs/profiles.md",
                     "tests/core/test_layering.py::test_not_there"]
    assert [missing(n) is None for n in named] == [False, True, True, False]
