"""The ISL bundle's datalists: label-free fields (`cellzoo.io.layouts.labelfree_fields`) with the input planes,
target stain and label image a task asks for, picked by name pattern."""

from __future__ import annotations

from pathlib import Path

from cellzoo.errors import InputError
from cellzoo.io.layouts import read_labelfree_fields


def select_channels(names: list[str], wanted: list[str]) -> list[str]:
    """Pick one name per case-insensitive substring pattern (an exact match wins over substrings)."""
    chosen = []
    for pattern in wanted:
        matches = _matching(names, pattern)
        if len(matches) != 1:
            problem = "matches no input plane" if not matches else f"matches several ({', '.join(matches)})"
            raise InputError(f"channel pattern '{pattern}' {problem}; available: {', '.join(names)}")
        chosen.append(matches[0])
    return chosen


def isl_datalist(
    root: str | Path,
    inputs: list[str],
    target: str | None = None,
    label: str | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> list[dict]:
    """Training/inference entries for the ISL bundle: {"image": [input plane paths], "target"?, "label"?, ...}.

    `inputs` picks the label-free planes by name pattern, in order (e.g. ["BRIGHTFIELD_z0", "BRIGHTFIELD_z1",
    "PHASE_CONTRAST"] or ["DIC"]); `target` picks one fluorescence image (e.g. "DAPI") and `label` one
    instance label image (e.g. "nuclei"); fields lacking the requested target or label are left out.
    """
    entries = read_labelfree_fields(root, n_folds=n_folds, seed=seed)
    out = []
    for entry in entries:
        item = {"name": entry["name"], "fold": entry["fold"]}
        names = list(entry["inputs"])
        item["image"] = [entry["inputs"][n] for n in select_channels(names, list(inputs))]
        if not _add_picked(item, "target", entry["targets"], target) or not _add_picked(item, "label", entry["labels"], label):
            continue
        out.append(item)
    if not out:
        raise InputError(f"no ISL field has the requested target {target!r} / label {label!r}", root)
    return out


def _add_picked(item: dict, key: str, files: dict[str, str], pattern: str | None) -> bool:
    """Add files[name matching pattern] as item[key]; False when the field has no such file."""
    if pattern is None:
        return True
    matches = _matching(list(files), pattern)
    if len(matches) > 1:
        raise InputError(f"{key} pattern '{pattern}' matches several files ({', '.join(matches)})")
    if matches:
        item[key] = files[matches[0]]
    return bool(matches)


def _matching(names: list[str], pattern: str) -> list[str]:
    """Names equal to `pattern` (case-insensitive), else the names that contain it."""
    exact = [n for n in names if n.lower() == pattern.lower()]
    return exact or [n for n in names if pattern.lower() in n.lower()]
