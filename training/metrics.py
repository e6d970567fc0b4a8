"""Training metrics: JSON lines and a PNG plot of loss and implicit accuracy (issue item 7)."""
from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per event to ``metrics.jsonl`` and keeps them for plotting."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: list[dict] = []
        if self.path.is_file():
            self.records = [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume: forget records past the checkpoint's step (they will be produced again)."""
        self.records = [r for r in self.records if r["step"] <= step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, record: dict) -> None:
        self.records.append(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def plot(records: list[dict], path: Path) -> None:
    """Loss (train) and implicit accuracy (train, validation) against step, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    ax_l.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if val:
        ax_l.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="val loss")
    ax_l.set_xlabel("step"); ax_l.set_ylabel("DPO loss"); ax_l.legend()
    ax_a.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train implicit acc")
    if val:
        ax_a.plot([r["step"] for r in val], [r["accuracy"] for r in val], "o-", label="val implicit acc")
    ax_a.set_ylim(-0.05, 1.05); ax_a.set_xlabel("step"); ax_a.set_ylabel("implicit accuracy"); ax_a.legend()
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
