"""In-silico labelling fields: input_<name>.* label-free planes, target_<name>.* stains, label_<name>.* masks."""

from __future__ import annotations

import re
from pathlib import Path

from cellzoo.errors import InputError
from cellzoo.io.datalist import assign_folds
from cellzoo.io.files import IMAGE_SUFFIXES, image_suffix
from cellzoo.io.validate import check_dir

ROLE_RE = re.compile(r"^(input|target|label)_(.+)$")
# role prefix in the file name -> key in the entry
ROLE_KEYS = {"input": "inputs", "target": "targets", "label": "labels"}


def read_isl(root: str | Path, n_folds: int = 5, seed: int = 0) -> list[dict]:
    """List ISL fields: root itself when it holds input_* files, else each subfolder that does."""
    root = check_dir(root)
    single = _field_entry(root)
    if single["inputs"]:
        entries = [single]
    else:
        entries = [_field_entry(p) for p in sorted(root.iterdir()) if p.is_dir()]
        entries = [entry for entry in entries if entry["inputs"]]
    if not entries:
        raise InputError("not an ISL layout: no input_<name> images here or in any subfolder", root)
    return assign_folds(entries, n_folds=n_folds, seed=seed)


def _field_entry(folder: Path) -> dict:
    return {"name": folder.name, **_field_files(folder)}


def _field_files(folder: Path) -> dict[str, dict[str, str]]:
    """Group a field's image files by role, keyed by the name after the role prefix."""
    found: dict[str, dict[str, str]] = {key: {} for key in ROLE_KEYS.values()}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        suffix = image_suffix(path)
        match = ROLE_RE.match(path.name[: -len(suffix)]) if suffix in IMAGE_SUFFIXES else None
        if match:
            role, name = match.groups()
            found[ROLE_KEYS[role]][name] = str(path.absolute())
    return {key: dict(sorted(files.items(), key=lambda item: _natural_key(item[0]))) for key, files in found.items()}


def _natural_key(name: str) -> list:
    """Sort key that orders z2 before z10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


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
    entries = read_isl(root, n_folds=n_folds, seed=seed)
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
