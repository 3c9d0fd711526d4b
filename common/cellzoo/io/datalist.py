"""MONAI datalist JSON files: write with relative paths, load with absolute ones, assign folds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cellzoo.errors import InputError

SECTIONS = ("training", "validation", "testing")
# MONAI always joins these keys with base_dir; other keys only when the joined path exists.
_ALWAYS_PATH_KEYS = ("image", "label")


def write_datalist(
    path: str | Path,
    training: list[dict],
    validation: list[dict] | None = None,
    testing: list[dict] | None = None,
    base_dir: str | Path | None = None,
    **extra_keys: Any,
) -> Path:
    """Write a MONAI datalist JSON; absolute paths inside base_dir (default: its folder) become relative."""
    path = Path(path)
    base = Path(base_dir if base_dir is not None else path.parent).resolve()
    content: dict[str, Any] = {}
    for name, entries in zip(SECTIONS, (training, validation, testing)):
        content[name] = [_relative_entry(entry, base) for entry in (entries or [])]
    content.update(extra_keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(content, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)  # no half-written datalist if the process dies mid-write
    return path


def _relative_entry(entry: dict, base: Path) -> dict:
    return {key: _relative_value(value, base) for key, value in entry.items()}


def _relative_value(value: Any, base: Path) -> Any:
    if isinstance(value, (str, os.PathLike)):
        return _relative_path(value, base)
    if isinstance(value, list):
        return [_relative_value(item, base) for item in value]
    if isinstance(value, dict):
        return {key: _relative_value(item, base) for key, item in value.items()}
    return value


def _relative_path(value: str | os.PathLike, base: Path) -> Any:
    """Absolute paths inside base become relative; everything else is kept as written."""
    text = os.fspath(value)
    if not os.path.isabs(text):
        return text
    try:
        return Path(text).resolve().relative_to(base).as_posix()
    except ValueError:
        return text


def _json_default(value: Any) -> Any:
    """Let numpy scalars and Paths through json.dumps."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot store {type(value).__name__} in a datalist")


def load_datalist(path: str | Path, key: str = "training", base_dir: str | Path | None = None) -> list[dict]:
    """Load one section of a datalist with paths joined to base_dir (default: the JSON's folder)."""
    path = Path(path)
    raw = _read_json(path)
    if not isinstance(raw, dict) or key not in raw:
        found = ", ".join(raw) if isinstance(raw, dict) else type(raw).__name__
        raise InputError(f"datalist has no '{key}' section (found: {found})", path)
    if not isinstance(raw[key], list) or not all(isinstance(item, dict) for item in raw[key]):
        raise InputError(f"datalist section '{key}' must be a list of objects", path)
    base = Path(base_dir if base_dir is not None else path.parent)
    from monai.data import load_decathlon_datalist  # imported late: importing MONAI takes many seconds

    loaded = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key, base_dir=str(base))
    return [_fix_entry(original, entry, base) for original, entry in zip(raw[key], loaded)]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON: {exc}", path) from exc


def _fix_entry(original: dict, entry: dict, base: Path) -> dict:
    """Undo MONAI joining plain words with base_dir and join paths nested in dicts, which MONAI skips."""
    for key, value in original.items():
        if key in _ALWAYS_PATH_KEYS:
            continue
        if isinstance(value, str) and not _looks_like_path(value):
            # e.g. "sequence": "01" would become base/01 whenever a folder "01" sits next to the JSON
            entry[key] = value
        elif isinstance(value, dict):
            entry[key] = {k: _join_if_exists(v, base) for k, v in value.items()}
    return entry


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or bool(Path(value).suffix)


def _join_if_exists(value: Any, base: Path) -> Any:
    if isinstance(value, str) and not os.path.isabs(value) and (base / value).exists():
        return os.path.normpath(base / value)
    return value


def assign_folds(entries: list[dict], n_folds: int = 5, seed: int = 0) -> list[dict]:
    """Return copies of entries with a deterministic, balanced "fold" index in [0, n_folds)."""
    if n_folds < 1:
        raise InputError(f"n_folds must be at least 1, got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(entries))
    folds = np.empty(len(entries), dtype=int)
    folds[order] = np.arange(len(entries)) % n_folds
    return [{**entry, "fold": int(fold)} for entry, fold in zip(entries, folds)]


def split_by_fold(entries: list[dict], val_fold: int) -> tuple[list[dict], list[dict]]:
    """Split entries into (train, val) where val holds the entries of fold `val_fold`."""
    missing = [i for i, entry in enumerate(entries) if "fold" not in entry]
    if missing:
        raise InputError(f"{len(missing)} datalist entries have no 'fold' (first: index {missing[0]})")
    train = [entry for entry in entries if entry["fold"] != val_fold]
    val = [entry for entry in entries if entry["fold"] == val_fold]
    return train, val
