"""Label-free focal series with organelle targets, the LightMyCells challenge layout:
Study_N/image_<id>_<BF|PC|DIC>_z<k>.ome.tiff + image_<id>_<organelle>.ome.tiff (read and write)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.datalist import assign_folds
from cellzoo.io.images import write_ome_tiff
from cellzoo.io.validate import check_dir

MODALITIES = ("BF", "PC", "DIC")
ORGANELLES = ("Nucleus", "Mitochondria", "Tubulin", "Actin")
INPUT_RE = re.compile(r"^image_(\w+?)_(BF|PC|DIC)_z(\d+)\.ome\.tiff?$")
TARGET_RE = re.compile(r"^image_(\w+?)_(Nucleus|Mitochondria|Tubulin|Actin)\.ome\.tiff?$")
STUDY_RE = re.compile(r"^Study_(\d+)$")


def read_lightmycells(
    root: str | Path,
    organelle: str | None = None,
    modality: str | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> list[dict]:
    """One entry per (study, image id) with its z-planes and organelle targets; filter by organelle/modality."""
    root = check_dir(root)
    _check_choice(organelle, ORGANELLES, "organelle", root)
    _check_choice(modality, MODALITIES, "modality", root)
    studies = sorted((p for p in root.iterdir() if p.is_dir() and STUDY_RE.match(p.name)), key=_study_number)
    if not studies:
        raise InputError("not a LightMyCells layout: no Study_N folders", root)
    entries = [entry for study in studies for entry in _study_entries(study)]
    entries = [e for e in entries if modality is None or e["modality"] == modality]
    if organelle is not None:
        entries = [{**e, "label": e["targets"][organelle]} for e in entries if organelle in e["targets"]]
    if not entries:
        wanted = " ".join(f"{k}={v}" for k, v in (("organelle", organelle), ("modality", modality)) if v)
        raise InputError(f"no LightMyCells images found{' for ' + wanted if wanted else ''}", root)
    return assign_folds(entries, n_folds=n_folds, seed=seed)


def _check_choice(value: str | None, choices: tuple[str, ...], what: str, root: Path) -> None:
    if value is not None and value not in choices:
        raise InputError(f"unknown {what} '{value}' (choose from {', '.join(choices)})", root)


def _study_number(study: Path) -> int:
    return int(STUDY_RE.match(study.name).group(1))


def _study_entries(study: Path) -> list[dict]:
    planes: dict[str, list[tuple[int, str, Path]]] = {}
    targets: dict[str, dict[str, str]] = {}
    for path in sorted(p for p in study.iterdir() if p.is_file()):
        if match := INPUT_RE.match(path.name):
            image_id, modality, z = match.groups()
            planes.setdefault(image_id, []).append((int(z), modality, path))
        elif match := TARGET_RE.match(path.name):
            image_id, organelle = match.groups()
            targets.setdefault(image_id, {})[organelle] = str(path.absolute())
    # Targets without any input plane cannot be used for training, so they are left out.
    ids = sorted(planes, key=_id_key)
    return [_entry(study, image_id, planes[image_id], targets.get(image_id, {})) for image_id in ids]


def _id_key(image_id: str) -> tuple[int, str]:
    return (int(image_id), image_id) if image_id.isdigit() else (2**63, image_id)


def _entry(study: Path, image_id: str, planes: list[tuple[int, str, Path]], targets: dict[str, str]) -> dict:
    modalities = sorted({modality for _, modality, _ in planes})
    if len(modalities) > 1:
        raise InputError(f"image_{image_id} mixes modalities {', '.join(modalities)}", study)
    planes = sorted(planes)
    return {
        "image": [str(path.absolute()) for _, _, path in planes],
        "modality": modalities[0],
        "z": [z for z, _, _ in planes],
        "targets": dict(sorted(targets.items())),
        "study": study.name,
        "name": f"{study.name}_image_{image_id}",
    }


def write_lightmycells_image(root: str | Path, study: str, image_id: str | int, modality: str,
                             planes: list[np.ndarray], targets: dict[str, np.ndarray],
                             uuid_seed: int | None = None) -> list[Path]:
    """Write one image of a study: its focal planes as image_<id>_<modality>_z<k>.ome.tiff and each organelle
    target as image_<id>_<organelle>.ome.tiff, under root/<study>; returns the paths written.

    `uuid_seed` derives each file's OME UUID from it and the file name (tifffile draws a random one), so equal
    seeds give byte-identical files."""
    _check_choice(modality, MODALITIES, "modality", Path(root))
    for organelle in targets:
        _check_choice(organelle, ORGANELLES, "organelle", Path(root))
    folder = Path(root) / study
    files = [(f"image_{image_id}_{modality}_z{k}.ome.tiff", plane) for k, plane in enumerate(planes)]
    files += [(f"image_{image_id}_{organelle}.ome.tiff", target) for organelle, target in targets.items()]
    return [write_ome_tiff(folder / name, array, "YX", uuid=_file_uuid(uuid_seed, name)) for name, array in files]


def _file_uuid(seed: int | None, name: str) -> str | None:
    return None if seed is None else str(uuid.uuid5(uuid.NAMESPACE_URL, f"cellzoo-synthetic/{seed}/{name}"))
