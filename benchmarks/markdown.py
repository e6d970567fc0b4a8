"""Markdown tables of a report: ``python -m benchmarks.markdown output/benchmarks/report.json``.

Used to write the measured section of ``docs/benchmarks.md`` from a run's ``report.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _r(entry: dict) -> str:
    return f"{entry['ratio']:.3f} ({entry['ratio_q1']:.3f}–{entry['ratio_q3']:.3f})"


def tables(report: dict) -> str:
    res = report.get("results", {})
    out = []
    if "overhead" in res and "cases" in res["overhead"]:
        out += ["#### 1. Sampling overhead (per step; median ratio, quartiles)", "",
                "| model | latent | steps | stock s/step | PSA T=1 / stock | PSA T=4 / stock | reference-style T=1 / stock "
                "| PSA setup / stock sample |", "|---|---|---|---|---|---|---|---|"]
        for c in res["overhead"]["cases"]:
            v = c["variants"]
            out.append(f"| {c['model']} | {c['latent']}×{c['latent']} | {c['steps']} | {v['stock']['median_s']:.3f} | "
                       f"{_r(v['psa_t1'])} | {_r(v['psa_t4'])} | {_r(v['reference_style_t1'])} | "
                       f"{c['setup_share_of_stock_sample']:.4f} |")
        out.append("")
    if "scaling" in res and "grid" in res["scaling"]:
        sc = res["scaling"]
        out += [f"#### 2. Scaling ({sc['model']}, cfg 7)", "",
                "| batch | latent | steps (pairs) | stock s/call | PSA T=1 / stock | reference-style T=1 / stock |",
                "|---|---|---|---|---|---|"]
        for g in sc["grid"]:
            out.append(f"| {g['batch']} | {g['latent']} | {g.get('steps', 6)} ({g['stock']['pairs']}) | "
                       f"{g['stock']['median_s']:.3f} | {_r(g['psa_t1'])} | "
                       f"{_r(g['reference_style_t1']) if 'reference_style_t1' in g else 'not run (cell cap)'} |")
        for c in sc.get("skipped", []):
            out.append(f"| {c['batch']} | {c['latent']} | skipped | predicted {c['predicted_s_for_4_steps']} s "
                       f"for 4 steps of stock + PSA > cap {sc.get('cell_cap_s')} s | — | — |")
        out.append("")
    if "many_users" in res and "timings" in res["many_users"]:
        m = res["many_users"]
        t = m["timings"]
        out += ["#### 3. Many users, one batch", "",
                "| model | latent | steps | 4 sequential runs s | 1 batch of 4 s | batched / sequential | fixed share of a "
                "batch-1 run |", "|---|---|---|---|---|---|---|",
                f"| {m['model']} | {m['latent']} | {m['steps']} | {t['sequential_4x1']['median_s']:.2f} | "
                f"{t['batched_1x4']['median_s']:.2f} | {_r(t['batched_1x4'])} | {m.get('fixed_share_of_batch1_run', '—')} |",
                ""]
        if m.get("batching_gain_per_call"):
            out += ["Per model call (UNet alone): t(batch 4) / (4 · t(batch 1)), stock vs PSA.", "",
                    "| latent | stock s (b1 / b4) | PSA s (b1 / b4) | stock ratio | PSA ratio |", "|---|---|---|---|---|"]
            for g in m["batching_gain_per_call"]:
                out.append(f"| {g['latent']} | {g['batch1_s']['stock']} / {g['batch4_s']['stock']} | "
                           f"{g['batch1_s']['psa_t1']} / {g['batch4_s']['psa_t1']} | {g['call_ratio']['stock']} | "
                           f"{g['call_ratio']['psa_t1']} |")
            out.append("")
    if "profile_switch" in res and "ratio" in res["profile_switch"]:
        p = res["profile_switch"]
        req = p.get("requested_to_load_lines_per_run", {})
        out += ["#### 4. Profile switch on a live server", "",
                "| B after A s | A after B s | A after A s | stock KSampler s | (B after A) / (A after A) | "
                "PSA rerun / stock | 'Requested to load' per run (B→A, A→A, stock) | weight loads after warm-up |",
                "|---|---|---|---|---|---|---|---|",
                f"| {p['median_s']['B_after_A']} | {p['median_s']['A_after_B']} | {p['median_s']['A_after_A']} | "
                f"{p['median_s'].get('stock', '—')} | {p['ratio']:.3f} ({p['ratio_q1_q3'][0]:.3f}–{p['ratio_q1_q3'][1]:.3f}) | "
                f"{p.get('psa_rerun_over_stock', '—')} | {req.get('B_after_A', '—')}, {req.get('A_after_A', '—')}, "
                f"{req.get('stock', '—')} | {p.get('weight_loads_after_warmup', p.get('model_loads_after_warmup'))} |", ""]
    if "adapter_load" in res and "cases" in res["adapter_load"]:
        out += ["#### 5. Adapter load + patch", "",
                "| adapter | format | file MB | load + patch s (quartiles) | read-only floor s | ratio to floor | target |",
                "|---|---|---|---|---|---|---|"]
        for c in res["adapter_load"]["cases"]:
            q = c["load_and_patch_s_q1_q3"]
            out.append(f"| {c['arch']} ({c['parameters_m']} M) | {c['format']} | {c['file_mb']} | {c['load_and_patch_s']:.3f} "
                       f"({q[0]:.3f}–{q[1]:.3f}) | {c['read_only_s']:.3f} | {c['ratio_to_read_only']:.2f} | ≤ {c['target_s']} s |")
        out.append("")
    if "training" in res and "step" in res["training"]:
        s = res["training"]["step"]
        out += ["#### 6. Training", "",
                "| peak memory shared / copy | step time shared / copy (quartiles) | shared step s | copy step s |",
                "|---|---|---|---|",
                f"| {s['peak_memory_ratio']} | {s['step_time_ratio']} ({s['step_time_ratio_quartiles'][0]}–"
                f"{s['step_time_ratio_quartiles'][1]}) | {s['median_step_s']['shared']} | {s['median_step_s']['copy']} |", "",
                "| latent cache UNet | px | epoch without cache s | cached epoch s | speed-up | encode share |",
                "|---|---|---|---|---|---|"]
        for c in res["training"].get("latent_cache", []):
            out.append(f"| {c['unet']} | {c['resolution']} | {c['epoch_without_cache_s']} | {c['second_cached_epoch_s']} | "
                       f"{c['speedup']} | {c['encode_share_of_uncached_epoch']} |")
        out.append("")
    if "encoder" in res and "timings" in res["encoder"]:
        e = res["encoder"]
        t = e["timings"]
        out += ["#### 7. Profile encoder", "",
                "| miss s | hit s | hit / miss | model freed after close | RSS MiB before / loaded / after |",
                "|---|---|---|---|---|",
                f"| {t['miss']['median_s']:.3f} | {t['hit']['median_s']:.4f} | {_r(t['hit'])} | {e['model_freed_after_close']} | "
                f"{e['rss_mib']['before']} / {e['rss_mib']['loaded']} / {e['rss_mib']['after_close']} |", ""]
    errors = {k: v["error"] for k, v in res.items() if isinstance(v, dict) and "error" in v}
    if errors:
        out += ["Errors: " + "; ".join(f"{k}: {v[:200]}" for k, v in errors.items()), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0]) if args else Path("output/benchmarks/report.json")
    print(tables(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
