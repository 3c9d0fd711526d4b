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


def bundle_path(bundle: str | Path) -> Path:
    """A bundle folder given by name (looked up in bundles_dir()) or by path."""
    candidate = Path(bundle)
    if not (candidate / "configs").is_dir():
        candidate = bundles_dir() / str(bundle)
    if not (candidate / "configs").is_dir():
        names = ", ".join(info["name"] for info in list_bundles()) or "none"
        raise InputError(f"no bundle named '{bundle}' (available: {names})")
    return candidate


def config_files(bundle: str | Path, config: str, quick: bool = False) -> list[str]:
    """Paths of `configs/<config>.yaml` and, with `quick`, the `quick.yaml` override after it."""
    root = bundle_path(bundle)
    names = [config] + (["quick"] if quick else [])
    files = [root / "configs" / f"{name}.yaml" for name in names]
    for path in files:
        if not path.is_file():
            raise InputError(f"bundle '{root.name}' has no {path.name}", path)
    return [str(path) for path in files]


def run_config(bundle: str | Path, config: str, quick: bool = False, **overrides) -> None:
    """Run one of a bundle's configs with MONAI's bundle runner, `bundle_root` set to the bundle folder."""
    from monai.bundle import run

    root = bundle_path(bundle)
    files = config_files(root, config, quick)
    run(config_file=files, meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"), bundle_root=str(root), **overrides)
