"""MONAI datalist JSON files: write with relative paths, load with absolute ones, assign folds."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.files import load_json, write_text

logger = logging.getLogger(__name__)

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
    return write_text(path, json.dumps(content, indent=2, default=_json_default) + "\n")


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
    raw = load_json(path)
    if not isinstance(raw, dict) or key not in raw:
        found = ", ".join(raw) if isinstance(raw, dict) else type(raw).__name__
        raise InputError(f"datalist has no '{key}' section (found: {found})", path)
    if not isinstance(raw[key], list) or not all(isinstance(item, dict) for item in raw[key]):
        raise InputError(f"datalist section '{key}' must be a list of objects", path)
    base = Path(base_dir if base_dir is not None else path.parent)
    from monai.data import load_decathlon_datalist  # imported late: importing MONAI takes many seconds

    loaded = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key, base_dir=str(base))
    return [_fix_entry(original, entry, base) for original, entry in zip(raw[key], loaded)]


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


def select_items(entries: list[dict], names: Sequence[str] | None, source: str | Path | None = None) -> list[dict]:
    """The entries whose "name" is in `names`, in that order (every entry when `names` is None)."""
    if names is None:
        return list(entries)
    by_name = {entry["name"]: entry for entry in entries}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise InputError(f"no item named {shown} among the {len(entries)} found", source)
    return [by_name[name] for name in names]


def split_items(entries: list[dict], train_items: Sequence[str] | None = None, val_items: Sequence[str] | None = None,
                val_fold: int = 0, source: str | Path | None = None,
                exclude_items: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """{"train": [...], "val": [...]}: the named items, or else every entry outside / inside fold `val_fold`.

    `exclude_items` are left out first (a study's test items, when a pretraining takes everything else).
    Named training items never validate: without named validation items, the fold's other items do, or
    else every labelled item not trained on. With too few entries one side can come out empty; then the
    other side is used for both (better than no validation at all), and a warning says which.
    """
    excluded = set(exclude_items or ())
    entries = [entry for entry in entries if entry["name"] not in excluded]
    if not entries:
        raise InputError("no labelled items to train on", source)
    train = select_items(entries, train_items, source) if train_items is not None else \
        [entry for entry in entries if entry.get("fold") != val_fold]
    val = select_items(entries, val_items, source) if val_items is not None else \
        [entry for entry in entries if entry.get("fold") == val_fold and entry not in train]
    if not val and train_items is not None and val_items is None:
        val = [entry for entry in entries if entry not in train]
    if not train:
        logger.warning("no labelled item left to train on: training on the %d validation item(s), so the "
                       "validation score measures fit, not generalisation", len(val))
        train = list(val)
    elif not val:
        logger.warning("no labelled item left to validate on: validating on the %d training item(s), so the "
                       "validation score measures fit, not generalisation", len(train))
        val = list(train)
    return {"train": train, "val": val}
