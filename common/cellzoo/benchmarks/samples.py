"""The images of the benchmark's shared tasks, as arrays, before they are written in each bundle's layout.

Two kinds of task, each on real data (../shared/realdata in this project) and on synthetic data:

- nucleus instances: a fluorescence image and its instance labels per sample, plus unlabelled images
  that label-free pretraining may use (real: DSB2018 stage-1 test fluorescence images, Fluo-N2DL-HeLa and
  Fluo-N2DH-GOWT1 annotated frames; unlabelled, also the 20 frames of the GOWT1 time-lapse);
- label-free -> fluorescence: three phase-contrast focal planes and the nucleus stain per sample (real:
  the In Silico Labeling field cut into tiles, so that the budgets count tiles of one field).

Sample names are the same in every layout (they become the items the studies split), so one split
seed gives every bundle the same test set and the same training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io import read_image, read_labels

__all__ = ["DSB_FLUORESCENCE", "LabelFreeSample", "NucleusSample", "real_labelfree", "real_nuclei",
           "synthetic_labelfree", "synthetic_nuclei"]

# the fluorescence images among the 11 DSB2018 stage-1 test images of the real data (SOURCE.txt)
DSB_FLUORESCENCE = ("0a849e0e", "43a71aeb", "432f367a", "8b59819f", "4f949bd8", "0999dab0", "fe9adb62")


@dataclass(frozen=True)
class NucleusSample:
    """One fluorescence image (YX) with its nucleus instance labels (None: unlabelled)."""

    name: str
    image: np.ndarray
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class LabelFreeSample:
    """Label-free focal planes (each YX, in focus order) and the fluorescence stain to predict."""

    name: str
    planes: tuple[np.ndarray, ...]
    target: np.ndarray


def _grey(image: np.ndarray) -> np.ndarray:
    """YX as read, or the mean of the colour channels of a YXC (RGB or RGBA) image."""
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return np.round(image[..., :3].astype(np.float64).mean(-1)).astype(image.dtype)
    if image.ndim != 2:
        raise InputError(f"expected a 2D grey or colour image, got shape {image.shape}")
    return image


def _folder(realdata: Path, name: str) -> Path:
    folder = Path(realdata) / name
    if not folder.is_dir():
        raise InputError("real data set not found", folder)
    return folder


def real_nuclei(realdata: str | Path) -> tuple[list[NucleusSample], list[NucleusSample]]:
    """(labelled, unlabelled) nucleus images of the real data: 7 + 2 + 8 labelled, 20 unlabelled frames."""
    labelled = []
    dsb = _folder(realdata, "dsb2018_stage1test")
    for path in sorted((dsb / "images").glob("*.png")):
        if path.stem[:8] in DSB_FLUORESCENCE:
            labels = read_labels(dsb / "labels" / f"{path.stem}.tif")
            labelled.append(NucleusSample(f"dsb_{path.stem[:8]}", _grey(read_image(path)[0]), labels))
    for folder, prefix in (("ctc_hela_seg", "hela"), ("ctc_gowt1_seg", "gowt1")):
        root = _folder(realdata, folder)
        for path in sorted((root / "images").glob("*.tif")):
            frame = path.stem.replace("t", "man_seg", 1) if path.stem.startswith("t") else \
                path.stem.replace("_t", "_man_seg", 1)
            labels = read_labels(root / "labels" / f"{frame}.tif")
            labelled.append(NucleusSample(f"{prefix}_{path.stem}", read_image(path, axes="YX")[0], labels))
    frames = _folder(realdata, "ctc_gowt1_tra") / "01"
    unlabelled = [NucleusSample(f"gowt1tra_{p.stem}", read_image(p, axes="YX")[0]) for p in sorted(frames.glob("t*.tif"))]
    return labelled, unlabelled


def real_labelfree(realdata: str | Path, tiles: int = 4) -> list[LabelFreeSample]:
    """The In Silico Labeling field (phase contrast z0, z6, z12 -> DAPI) as tiles x tiles samples."""
    root = _folder(realdata, "isl_labelfree")
    planes = [read_image(root / f"input_phase_z{z}.png", axes="YX")[0] for z in (0, 6, 12)]
    target = read_image(root / "target_maxproj_DAPI_CONFOCAL.png", axes="YX")[0]
    return _tiles(planes, target, tiles)


def _tiles(planes: list[np.ndarray], target: np.ndarray, tiles: int) -> list[LabelFreeSample]:
    h, w = target.shape[0] // tiles, target.shape[1] // tiles
    samples = []
    for row in range(tiles):
        for col in range(tiles):
            window = (slice(row * h, (row + 1) * h), slice(col * w, (col + 1) * w))
            samples.append(LabelFreeSample(f"t{row * tiles + col:02d}", tuple(p[window] for p in planes), target[window]))
    return samples


def _synthetic_fields(n: int, seed: int, size: tuple[int, int]):
    """Rendered fields with nuclear fluorescence and phase contrast at three focal planes (z = -1, 0, 1).

    Dense fields at a low photon count: touching, noisy nuclei, so one labelled image does not already
    saturate every method (medium-density bright fields do)."""
    from cellzoo.synthetic import render_field
    from cellzoo.synthetic.splits import child_seed

    for i in range(n):
        yield i, render_field(size, child_seed(seed, i), None, "dense", (10, 18), ("nuclear", "phase"), (-1.0, 0.0, 1.0),
                              photons=40.0)


def _uint16(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)


def synthetic_nuclei(n: int, n_unlabelled: int, seed: int = 0, size: tuple[int, int] = (192, 192)
                     ) -> tuple[list[NucleusSample], list[NucleusSample]]:
    """(labelled, unlabelled) synthetic nuclear fluorescence images (in focus) with exact labels."""
    samples = [NucleusSample(f"syn_{i:03d}", _uint16(f["images"]["nuclear"][1]), f["labels_nuclei"].astype(np.uint16))
               for i, f in _synthetic_fields(n + n_unlabelled, seed, size)]
    return samples[:n], [NucleusSample(s.name, s.image) for s in samples[n:]]


def synthetic_labelfree(n: int, seed: int = 0, size: tuple[int, int] = (192, 192)) -> list[LabelFreeSample]:
    """Synthetic phase contrast at three focal planes -> the in-focus nuclear stain."""
    return [LabelFreeSample(f"s{i:02d}", tuple(_uint16(p) for p in f["images"]["phase"]), _uint16(f["images"]["nuclear"][1]))
            for i, f in _synthetic_fields(n, seed, size)]
