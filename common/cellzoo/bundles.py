"""Locating the cellzoo MONAI bundles and reading their metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cellzoo.errors import InputError
from cellzoo.io.files import load_json

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
        meta = load_json(meta_path)
    # study.yaml and bioimageio.yaml are declarations for `cellzoo study` and the export, not configs to run
    configs = sorted(p.stem for p in (path / "configs").glob("*.yaml") if p.stem not in ("study", "bioimageio"))
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


def config_chain(bundle: str | Path, config: str) -> list[Path]:
    """`configs/<config>.yaml` preceded by the files it extends (its `extends:` key, followed recursively).

    A config that overrides another (MEDIAR's pretrain.yaml extends train.yaml, evaluate.yaml extends
    inference.yaml) names its base in `extends`; MONAI merges the list of files in order.
    """
    root = bundle_path(bundle)
    chain: list[Path] = []
    name = config
    while name is not None:
        path = root / "configs" / (name if name.endswith(".yaml") else f"{name}.yaml")
        if not path.is_file():
            raise InputError(f"bundle '{root.name}' has no {path.name}", path)
        if path in chain:
            raise InputError(f"configs extend each other in a circle ({path.name})", path)
        chain.insert(0, path)
        try:
            name = (yaml.safe_load(path.read_text()) or {}).get("extends")
        except yaml.YAMLError as err:
            raise InputError(f"invalid YAML ({err})", path) from err
    return chain


def config_files(bundle: str | Path, config: str, quick: bool = False) -> list[str]:
    """The config files MONAI merges to run `config`: its chain, then `quick.yaml` with `quick`."""
    files = config_chain(bundle, config) + (config_chain(bundle, "quick") if quick else [])
    return [str(path) for path in files]


def as_config_data(value: Any) -> Any:
    """`value` such that MONAI's config parser reads it as data, never as code or a reference.

    MONAI evaluates strings starting with `$`, follows `@` references and `%` macros, and rewrites relative
    ids (`@::`, `%::`) inside strings. A string that would trigger any of these (a path or a name a user
    typed) becomes an expression that only decodes its own hex bytes back to the same string; others pass
    unchanged, and lists and dicts are converted item by item.
    """
    if isinstance(value, str):
        risky = value.startswith(("$", "@", "%")) or "@::" in value or "%::" in value
        return f"$bytes.fromhex('{value.encode().hex()}').decode()" if risky else value
    if isinstance(value, (list, tuple)):
        return [as_config_data(item) for item in value]
    if isinstance(value, dict):
        return {key: as_config_data(item) for key, item in value.items()}
    if isinstance(value, Path):
        return as_config_data(str(value))
    return value


def parse_config_value(bundle: str | Path, config: str, key: str, quick: bool = False, **overrides) -> Any:
    """The parsed value of `key` in a bundle config with `overrides` (as data), `bundle_root` the bundle folder."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle, config, quick))
    parser["bundle_root"] = str(bundle_path(bundle))
    parser.update(as_config_data(overrides))
    return parser.get_parsed_content(key)


def run_config(bundle: str | Path, config: str, quick: bool = False, **overrides) -> None:
    """Run one of a bundle's configs with MONAI's bundle runner, `bundle_root` the bundle folder.

    Every override reaches the config as data (`as_config_data`): paths and names typed by a user are
    never evaluated.
    """
    from monai.bundle import run

    root = bundle_path(bundle)
    files = config_files(root, config, quick)
    run(config_file=files, meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"), bundle_root=as_config_data(str(root)),
        **as_config_data(overrides))
