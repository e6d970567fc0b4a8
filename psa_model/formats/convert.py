"""Convert PSA adapter files between the native and reference formats.

    python -m psa_model.formats.convert IN OUT [--to native|reference-bin|reference-safetensors]

Without ``--to`` the target follows OUT's name: ``*.bin`` → reference pickle; ``*.safetensors``
→ native (use ``--to reference-safetensors`` for the reference's flat safetensors variant).
Conversions never change what an adapter computes: reference files become per-group native
files, and a joint multi-token native file cannot become a reference file (docs/user-tokens.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .adapter_file import read_adapter_tensors, save_native, save_reference_bin, save_reference_safetensors

TARGETS = ("native", "reference-bin", "reference-safetensors")


def convert(src: Path, dst: Path, target: str | None = None) -> str:
    """Convert ``src`` to ``dst``; returns the target format used."""
    target = target or ("reference-bin" if dst.suffix == ".bin" else "native")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    tensors, meta = read_adapter_tensors(src)
    if target == "native":
        training = None
        if "training" in meta:
            import json

            training = json.loads(meta["training"])
        save_native(tensors, dst, meta=meta, training=training)
    elif target == "reference-bin":
        save_reference_bin(tensors, dst, meta)
    else:
        save_reference_safetensors(tensors, dst, meta)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psa_model.formats.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="adapter file to read (native or reference, .safetensors or .bin)")
    parser.add_argument("dst", type=Path, help="file to write")
    parser.add_argument("--to", choices=TARGETS, default=None, help="output format (default: from dst's suffix)")
    args = parser.parse_args(argv)
    if not args.src.is_file():
        parser.error(f"src {args.src}: no such file; give the adapter file to convert")
    try:
        target = convert(args.src, args.dst, args.to)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))  # one "error:" line, exit status 2, as for a bad option
    print(f"wrote {args.dst} ({target})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
