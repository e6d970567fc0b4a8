"""PNG plots of a benchmark report (matplotlib, headless; small files for docs/benchmarks/)."""
from __future__ import annotations

from pathlib import Path


def _errorbar(entry: dict) -> tuple[float, float, float]:
    return entry["ratio"], entry["ratio"] - entry["ratio_q1"], entry["ratio_q3"] - entry["ratio"]


def render(report: dict, out: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415 - optional: only for plots

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional: only for plots

    results = report.get("results", {})
    written = []
    overhead = results.get("overhead", {})
    if overhead.get("cases"):
        fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
        cases = overhead["cases"]
        names = [n for n in cases[0]["variants"] if n != "stock"]
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            vals = [_errorbar(c["variants"][name]) for c in cases]
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(cases))]
            ax.bar(xs, [v[0] for v in vals], width, yerr=[[v[1] for v in vals], [v[2] for v in vals]], label=name,
                   capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(1.02, color="r", lw=0.8, ls="--", label="target 1.02 (T=1)")
        ax.set_xticks(range(len(cases)), [f"{c['model']}\n{c['latent']}×{c['latent']} latent" for c in cases],
                      fontsize=8)
        ax.set_ylabel("step time / stock (median, IQR)")
        ax.set_ylim(0.9, max(1.15, ax.get_ylim()[1]))  # ratios near 1: bars from 0 would hide them
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.set_title("Sampling overhead per step (KSampler, cfg 7)", fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / "sampling_overhead.png"))
        plt.close(fig)
    scaling = results.get("scaling", {})
    if scaling.get("grid"):
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), dpi=100, sharey=True)
        sizes = sorted({g["latent"] for g in scaling["grid"]})
        for ax, variant in zip(axes, ("psa_t1", "reference_style_t1")):
            for size in sizes:
                rows = sorted((g for g in scaling["grid"] if g["latent"] == size and variant in g),
                              key=lambda g: g["batch"])
                if not rows:
                    continue
                vals = [_errorbar(g[variant]) for g in rows]
                xs = [g["stock"]["median_s"] for g in rows]
                ax.errorbar(xs, [v[0] for v in vals], yerr=[[v[1] for v in vals], [v[2] for v in vals]], marker="o",
                            capsize=3, label=f"latent {size}×{size}")
                for x, v, g in zip(xs, vals, rows):
                    ax.annotate(f"b{g['batch']}", (x, v[0]), textcoords="offset points", xytext=(3, 3), fontsize=6)
            ax.axhline(1.0, color="k", lw=0.8)
            if variant == "psa_t1":
                ax.axhline(1.02, color="r", lw=0.8, ls="--", label="target 1.02")
            ax.set_xscale("log")
            ax.set_xlabel("stock seconds per model call (work)")
            ax.set_title(f"{variant} / stock", fontsize=10)
        axes[0].set_ylabel("step time ratio (median, IQR)")
        axes[0].legend(fontsize=7)
        skipped = ", ".join(f"b{c['batch']}@{c['latent']}" for c in scaling.get("skipped", []))
        fig.suptitle(f"Scaling ({scaling['model']})" + (f"; skipped (over budget): {skipped}" if skipped else ""),
                     fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "sampling_scaling.png"))
        plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
