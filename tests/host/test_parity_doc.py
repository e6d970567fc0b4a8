"""docs/reference-parity.md's summary table stays in step with the trainer's options and the nodes.

Every ``--option`` the table names is one ``python -m training.train_psa --help`` lists (or a
flag of the named outside tool); every ``PSANode.input`` is an input of that pack node; every
option a reference recipe changes appears in the table; every row has a status, and a
"differs" row names what restores the reference or says it is not reproduced.
"""
from __future__ import annotations

import asyncio
import re

from conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "reference-parity.md"
FOREIGN_FLAGS = {"--nproc_per_node": "torchrun"}
NOT_PARITY = {"arch", "gradient_checkpointing"}  # which model a recipe is for; memory only, same numbers
STATUSES = ("same", "differs", "reference defect", "described")


def _rows() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    assert lines[0].startswith("| Area |") and len(rows) > 20
    return rows


def test_parity_table_names_real_options_and_node_inputs(comfy_host):
    from devkit.pack_loader import load_pack
    from training.config import TrainConfig, build_parser
    from training.recipes import RECIPES

    rows = _rows()
    cli_help = build_parser().format_help()
    cli_flags = set(re.findall(r"--[a-z][a-z0-9-]*", cli_help))
    table = "\n".join(" | ".join(row) for row in rows)
    for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", table)):
        assert flag in cli_flags or flag in FOREIGN_FLAGS, f"{flag} is not an option of train_psa --help"

    extension = asyncio.run(load_pack().comfy_entrypoint())
    schemas = {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in asyncio.run(extension.get_node_list())}
    named = re.findall(r"`(PSA[A-Za-z]+)\.([a-z_]+)`", table)
    assert named
    for node_id, name in named:
        assert node_id in schemas, f"{node_id} is not a node of the pack"
        assert name in {i.id for i in schemas[node_id].inputs}, f"{node_id} has no input {name!r}"

    pack = TrainConfig()
    for recipe in ("reference-sd15", "reference-sdxl"):
        for key, value in RECIPES[recipe].items():
            if key not in NOT_PARITY and getattr(pack, key) != value:
                flag = "--" + key.replace("_", "-")
                assert flag in table, f"{recipe} sets {flag} but the parity table does not name it"

    for row in rows:
        assert len(row) == 5, row
        assert row[3].startswith(STATUSES), row
        if row[3].startswith("differs"):
            assert row[4] not in ("", "—") and ("--" in row[4] or "`" in row[4] or "not reproduced" in row[4]
                                                 or "workflows" in row[4]), row

