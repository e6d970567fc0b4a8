"""Convert PSA adapter files between the native and reference formats.

    python -m psa_model.formats.convert IN OUT [--to native|reference-bin|reference-safetensors]

Without ``--to`` the target follows OUT's name: ``*.bin`` → reference pickle; ``*.safetensors``
→ native (use ``--to reference-safetensors`` for the reference's flat safetensors variant).
Conversions never change what an adapter computes: reference files become per-group native
files, and a joint multi-token native file cannot become a reference file (docs/user-tokens.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .adapter_file import (
    AdapterFormatError,
    read_adapter_tensors,
    save_native,
    save_reference_bin,
    save_reference_safetensors,
)

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
            try:
                training = json.loads(meta["training"])
            except ValueError:
                raise AdapterFormatError(f"{src.name}: its 'training' metadata is not JSON; convert the "
                                         "original file again") from None
        save_native(tensors, dst, meta=meta, training=training)
    elif target == "reference-bin":
        save_reference_bin(tensors, dst, meta)
    else:
        save_reference_safetensors(tensors, dst, meta)
    return target


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename:
        text = f"{Path(exc.filename).name}: {exc.strerror or text}"
    return text or exc.__class__.__name__


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
    except (OSError, ValueError) as exc:  # AdapterFormatError is a ValueError
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a CLI prints one line, never a traceback
        print(f"error: {args.src.name}: could not convert ({exc.__class__.__name__}); the file is not a PSA "
              "adapter this pack reads", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} ({target})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
