"""Training metrics: JSON lines and a PNG plot of loss, implicit accuracy and per-branch errors.

Each ``train``/``val`` record holds the DPO loss, the implicit accuracy and the four mean
squared errors the loss is built from — ``policy_mse_chosen``, ``policy_mse_rejected``,
``ref_mse_chosen``, ``ref_mse_rejected`` — so a run shows *how* the margin moves (the policy
lowering its error on chosen images, raising it on rejected ones, or both).
"""
from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per event to ``metrics.jsonl`` and keeps them for plotting."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: list[dict] = []
        if self.path.is_file():
            self.records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

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


BRANCHES = (("policy_mse_chosen", "policy, chosen", "tab:green", "-"),
            ("policy_mse_rejected", "policy, rejected", "tab:red", "-"),
            ("ref_mse_chosen", "reference, chosen", "tab:green", ":"),
            ("ref_mse_rejected", "reference, rejected", "tab:red", ":"))


def plot(records: list[dict], path: Path) -> None:
    """Loss, implicit accuracy and per-branch MSE (train, validation) against step, written to ``path``."""
    import matplotlib  # noqa: PLC0415 - optional: only for plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional: only for plots

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, (ax_l, ax_a, ax_m) = plt.subplots(1, 3, figsize=(15, 4))
    ax_l.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if val:
        ax_l.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="val loss")
    ax_l.set(xlabel="step", ylabel="DPO loss")
    ax_l.legend()
    ax_a.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train implicit acc")
    if val:
        ax_a.plot([r["step"] for r in val], [r["accuracy"] for r in val], "o-", label="val implicit acc")
    ax_a.set(ylim=(-0.05, 1.05), xlabel="step", ylabel="implicit accuracy")
    ax_a.legend()
    for key, label, colour, style in BRANCHES:
        rows = [r for r in train if key in r]
        if rows:
            ax_m.plot([r["step"] for r in rows], [r[key] for r in rows], style, color=colour, label=f"train {label}")
        rows = [r for r in val if key in r]
        if rows:
            ax_m.plot([r["step"] for r in rows], [r[key] for r in rows], style, color=colour, marker="o",
                      alpha=0.6, label=f"val {label}")
    ax_m.set(xlabel="step", ylabel="noise-prediction MSE", title="per-branch error")
    if ax_m.lines:
        ax_m.legend(fontsize="small")
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
