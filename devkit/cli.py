"""Small argparse helpers shared by the entry points' and benchmarks' command lines.

Mistakes end as one ``error:`` line naming the option (README: From clone to a real image).
"""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (the message names the value; argparse adds the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
