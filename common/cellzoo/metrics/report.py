"""The one way every bundle's evaluation writes `metrics.json` and shows its scores on the console."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cellzoo.io import write_text


def json_safe(value):
    """`value` with non-finite floats as None (JSON has no NaN) and numpy/torch scalars as plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_scores(report: dict, path: str | Path | None = None) -> str:
    """The report's top-level numbers, one per line (nested tables stay in the file)."""
    numbers = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    width = max((len(k) for k in numbers), default=0)
    lines = [f"scores{f' ({path})' if path else ''}:"]
    lines += [f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in numbers.items()]
    return "\n".join(lines)


def write_metrics(path: str | Path, report: dict) -> dict:
    """Write `report` as `path` (indent 2, NaN as null), print its scores, return what was written."""
    clean = json_safe(report)
    write_text(path, json.dumps(clean, indent=2) + "\n")
    print(format_scores(clean, path), flush=True)
    return clean
