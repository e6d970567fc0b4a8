"""pyproject.toml is ready for the Comfy Registry (publishing rules of docs.comfy.org/registry/specifications).

Rules checked: ``[project].name`` lowercase, ≤100 characters, only letters, digits, ``-``, ``_``
and ``.``, starting with a letter, no consecutive or trailing special characters; ``version``
semantic (X.Y.Z); ``license`` a file that exists (or text); a repository URL under
``[project.urls]``; ``[tool.comfy]`` with a non-empty lowercase PublisherId, a DisplayName and an
Icon that exists; and requirements.txt lists exactly the runtime dependencies.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
COMFY = PYPROJECT.get("tool", {}).get("comfy", {})
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")


def registry_name_problems(name: str) -> list[str]:
    problems = []
    if not name:
        return ["empty"]
    if name != name.lower():
        problems.append("not lowercase")
    if len(name) > 100:
        problems.append("longer than 100 characters")
    if not re.fullmatch(r"[a-z0-9._-]+", name.lower()):
        problems.append("characters other than letters, digits, '-', '_', '.'")
    if not name[0].isalpha():
        problems.append("does not start with a letter")
    if re.search(r"[._-]{2}", name):
        problems.append("consecutive special characters")
    if name[-1] in "._-":
        problems.append("ends with a special character")
    return problems


@pytest.mark.parametrize("bad", ["ComfyUI-PSA", "1psa", "psa--nodes", "psa-", "psa nodes", "p" * 101])
def test_the_name_rule_rejects(bad):
    assert registry_name_problems(bad)


def test_project_name():
    assert registry_name_problems(PROJECT["name"]) == []


def test_version_is_semver():
    assert SEMVER.match(PROJECT["version"]), PROJECT["version"]


def test_license():
    lic = PROJECT["license"]
    if isinstance(lic, dict) and "file" in lic:
        path = ROOT / lic["file"]
        assert path.is_file() and path.read_text().strip(), path
    elif isinstance(lic, dict):
        assert lic.get("text", "").strip()
    else:
        assert isinstance(lic, str) and lic.strip()


def test_description_and_repository_url():
    assert PROJECT.get("description", "").strip()
    urls = {k.lower(): v for k, v in PROJECT.get("urls", {}).items()}
    assert re.match(r"^https://(github\.com|gitlab\.com|[\w.-]+)/[\w.-]+/[\w.-]+/?$", urls.get("repository", "")), urls


def test_tool_comfy():
    publisher = COMFY.get("PublisherId", "")
    assert publisher and publisher == publisher.lower() and re.fullmatch(r"[a-z0-9][a-z0-9-]*", publisher), publisher
    assert COMFY.get("DisplayName", "").strip()
    icon = COMFY.get("Icon", "")
    assert icon and (ROOT / icon).is_file(), icon
    from PIL import Image

    with Image.open(ROOT / icon) as img:  # the registry shows icons square, at most 400x400
        assert img.width == img.height <= 400


def _requirement_names(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out[re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")] = line.replace(" ", "")
    return out


def test_requirements_txt_matches_runtime_dependencies():
    from_txt = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    from_pyproject = _requirement_names(PROJECT["dependencies"])
    assert from_txt == from_pyproject
