"""Benchmark 7: the LLM profile encoder — cache hit vs miss, and the LLM's memory released after use.

Uses a tiny random Qwen2 (``benchmarks/tiny_llm.py``, the real Qwen2.5 tokenizer from ComfyUI),
so the figures show this project's overhead around the LLM, not a 7B model's compute. A *miss*
is what PSA Encode Profile (LLM) does on a new profile (load tokenizer and model, encode, write
the cache entry, free the model); a *hit* reads the cached embedding. Release: after the
encoder closes, no reference to the model may remain (a weak reference must be dead), and the
process's resident memory is compared before loading, while loaded and after closing.
"""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

from psa_model.profiles import llm_encoder
from psa_model.profiles.embedding_cache import EmbeddingCache, encode_with_cache
from psa_model.profiles.llm_encoder import ProfileEncoder, load_template
from psa_model.profiles.schema import StructuredProfile
from psa_model.scratch import claim, remove

from .timing import paired_runs, ratio_summary
from .tiny_llm import build_tiny_qwen2


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def bench_encoder(quick: bool, work: Path) -> dict:
    claim(work, "the encoder benchmark's scratch folder")
    folder = build_tiny_qwen2(work / "tiny_qwen2")
    template = load_template()
    profile = StructuredProfile.create(age=15, gender="female", religion="Islam", mental_condition="anxiety",
                                       physical_condition="healthy", forbidden=["Violence", "Self-Harm", "Sexuality"])
    cache_root = work / "cache"

    def encode(profiles):
        with ProfileEncoder(folder, template) as encoder:
            return encoder.encode(profiles)

    def miss() -> None:
        remove(cache_root, work)
        _, hits = encode_with_cache(folder, template, [profile], EmbeddingCache(cache_root), encode)
        assert hits == 0

    def hit() -> None:
        _, hits = encode_with_cache(folder, template, [profile], EmbeddingCache(cache_root), encode)
        assert hits == 1

    times = paired_runs({"miss": miss, "hit": hit}, repeats=5 if quick else 7)
    summary = ratio_summary(times, "miss", digits=4)

    # Memory: a weak reference to the loaded model, and resident memory around one encode.
    seen: list = []
    real_load = llm_encoder.load_model

    def recording_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        seen.append((weakref.ref(model), _rss_mib()))
        return model

    gc.collect()
    before = _rss_mib()
    llm_encoder.load_model = recording_load
    try:
        encode([profile])
    finally:
        llm_encoder.load_model = real_load
    gc.collect()
    after = _rss_mib()
    ref, loaded = seen[0]
    return {"llm": "tiny random Qwen2 (hidden 32, 2 layers, Qwen2.5 tokenizer)", "timings": summary,
            "hit_over_miss": summary["hit"]["ratio"],
            "model_freed_after_close": ref() is None,
            "rss_mib": {"before": round(before), "loaded": round(loaded), "after_close": round(after)},
            "rss_released_share": round((loaded - after) / max(loaded - before, 1e-9), 2) if loaded > before else None}
