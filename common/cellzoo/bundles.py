"""Locating the cellzoo MONAI bundles and reading their metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cellzoo.errors import InputError

# Bundles live beside the package in the source tree (common/cellzoo -> ../../bundles);
# CELLZOO_BUNDLES points elsewhere, e.g. at a folder of downloaded bundles.
ENV_VAR = "CELLZOO_BUNDLES"


def bundles_dir() -> Path:
    """The folder that holds the bundles."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(__file__).resolve().parents[2] / "bundles"


def list_bundles() -> list[dict]:
    """One record per bundle: name, version, task, description and the configs it offers."""
    root = bundles_dir()
    if not root.is_dir():
        return []
    return [bundle_info(path) for path in sorted(root.iterdir()) if (path / "configs").is_dir()]


def bundle_info(path: str | Path) -> dict:
    """Name, version, task, description and config names of one bundle folder."""
    path = Path(path)
    meta_path = path / "configs" / "metadata.json"
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"invalid metadata.json ({err})", meta_path) from err
    configs = sorted(p.stem for p in (path / "configs").glob("*.yaml"))
    return {
        "name": path.name,
        "version": meta.get("version", "-"),
        "task": meta.get("task", "-"),
        "description": meta.get("description", ""),
        "configs": configs,
        "path": str(path),
    }
