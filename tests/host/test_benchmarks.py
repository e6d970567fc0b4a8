"""``python -m benchmarks`` runs end to end in quick mode (smoke test; no timing assertions)."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_entry_point_quick_writes_the_report(comfy_host, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "adapter_load", "gpu",
                           "--no-plots", "--threads", "1", "--out", str(out), "--work", str(tmp_path / "work")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert json.loads(proc.stdout) == report  # the printed report is the written one
    assert set(report["results"]) == {"adapter_load", "gpu"} and report["quick"] is True
    assert report["machine"]["torch_threads"] == 1  # --threads reached torch
    cases = report["results"]["adapter_load"]["cases"]
    assert [(c["arch"], c["format"]) for c in cases] == [("sd15", "native"), ("sd15", "reference_bin")]
    for case in cases:
        assert case["load_and_patch_s"] > 0 and case["file_mb"] > 80  # 21.9 M fp32 parameters
    assert "no CUDA" in report["results"]["gpu"]["status"] or report["machine"]["cuda"]
    assert not list((tmp_path / "work" / "adapter_load").glob("*.bin"))  # scratch adapter files removed


def test_scaling_cells_shrink_then_skip_as_predicted_cost_grows():
    from benchmarks.sampling import _cell_plan

    # cap 50 s, plenty left: 6 steps × 3 variants, then 4 × 3, then 4 × 2 (no peer), then skipped
    assert _cell_plan(2.0, 50.0, 1000.0) == (6, True)    # 36 s
    assert _cell_plan(3.0, 50.0, 1000.0) == (4, True)    # 54 s for 6 steps, 36 s for 4
    assert _cell_plan(6.0, 50.0, 1000.0) == (4, False)   # 72 s with the peer, 48 s without
    assert _cell_plan(7.0, 50.0, 1000.0) is None         # 56 s even without the peer
    assert _cell_plan(2.0, 50.0, 20.0) == (4, False)     # the grid's budget binds before the cap
