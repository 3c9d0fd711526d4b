"""Synthetic data sets rendered field by field and written in the on-disk layouts of CellSeg, CTC, LIVECell,
LightMyCells and ISL, through the layouts' own writers (`cellzoo.io.layouts`)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.coco import label_image_to_coco
from cellzoo.io.images import read_image
from cellzoo.io.layouts import (
    frame_digits,
    tra_markers,
    write_cellseg_item,
    write_coco_image,
    write_ctc_frame,
    write_ctc_tracks,
    write_labelfree_field,
    write_lightmycells_image,
)
from cellzoo.synthetic.objects import write_objects
from cellzoo.synthetic.optics import render_field
from cellzoo.synthetic.shapes import DENSITIES
from cellzoo.synthetic.splits import CocoSplits, child_seed
from cellzoo.synthetic.timelapse import render_timelapse

LAYOUTS = ("cellseg", "ctc", "coco", "lightmycells", "isl")
# not microscopy: COCO-like natural-object images (cellzoo.synthetic.objects), the stand-in for COCO when a
# method pretrains on natural images first (CUPre); `synthesize` writes them, LAYOUTS lists microscopy only
OTHER_LAYOUTS = ("objects",)
CELLSEG_MODALITIES = ("nuclear", "membrane", "brightfield", "phase", "dic")
LMC_INPUTS = {"BF": "brightfield", "PC": "phase", "DIC": "dic"}
LMC_TARGETS = {"Nucleus": "nuclear", "Mitochondria": "mitochondria", "Tubulin": "tubulin", "Actin": "actin"}
RADIUS_CHOICES = ((6.0, 12.0), (8.0, 20.0), (12.0, 26.0))  # mixed magnifications for varied data sets


# ---------------------------------------------------------------- file helpers

def to_uint16(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> full-range uint16."""
    return np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8."""
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def pick_density(rng: np.random.Generator, density: str | float | None) -> str | float:
    """The given density, or a random preset so a data set spans sparse to confluent fields."""
    return density if density is not None else str(rng.choice(list(DENSITIES)))


def pick_radius(rng: np.random.Generator, cell_radius: tuple[float, float] | None) -> tuple[float, float]:
    """The given radius range, or one of a few magnifications."""
    return tuple(cell_radius) if cell_radius is not None else RADIUS_CHOICES[int(rng.integers(len(RADIUS_CHOICES)))]


# ---------------------------------------------------------------- cellseg

def write_cellseg(out: Path, n: int, seed: int, size: tuple[int, int],
                  modalities: tuple[str, ...] = ("nuclear", "membrane", "brightfield", "phase"),
                  density: str | float | None = None, cell_radius: tuple[float, float] | None = None) -> None:
    """NeurIPS-22 CellSeg: images/cell_#####.{tif,png} of mixed modalities, labels/cell_#####_label.tiff."""
    bad = [m for m in modalities if m not in CELLSEG_MODALITIES]
    if bad or not modalities:
        raise InputError(f"cellseg modalities must be a non-empty subset of {CELLSEG_MODALITIES}, got {modalities}")
    for i in range(1, n + 1):
        rng = np.random.default_rng(child_seed(seed, i))
        mod = modalities[(i - 1) % len(modalities)]
        render = "brightfield_rgb" if mod == "brightfield" else mod  # CellSeg brightfield is stained RGB
        f = render_field(size, child_seed(seed, i, 1), None, pick_density(rng, density), pick_radius(rng, cell_radius),
                         (render,))
        img = f["images"][render]
        # transmitted light as 8 bits (brightfield stained RGB, as PNG), fluorescence as 16 bits
        image = to_uint8(img) if mod in ("brightfield", "phase", "dic") else to_uint16(img)
        # nuclear stains show nuclei only, so their instances are nuclei; every other modality shows cells
        lab = f["labels_nuclei"] if mod == "nuclear" else f["labels_cells"]
        write_cellseg_item(out, f"cell_{i:05d}", image, lab, ".png" if mod == "brightfield" else ".tif")


# ---------------------------------------------------------------- ctc

def write_ctc(out: Path, n: int, seed: int, size: tuple[int, int], n_sequences: int = 1, depth: int | None = None,
              gt_every: int = 3, density: str | float = "medium", cell_radius: tuple[float, float] = (10, 18)) -> None:
    """Cell Tracking Challenge: 0s/tTTT.tif, 0s_GT/SEG (every gt_every-th frame), 0s_ST/SEG, 0s_GT/TRA."""
    if n_sequences not in (1, 2) or gt_every < 1:
        raise InputError(f"ctc needs n_sequences in (1, 2) and gt_every >= 1, got {n_sequences}, {gt_every}")
    axes = "ZYX" if depth else "YX"
    for s in range(1, n_sequences + 1):
        seq = f"{s:02d}"
        tl = render_timelapse(size, n, child_seed(seed, s), density, cell_radius, depth, ("nuclear",))
        for t in range(n):
            lab = tl["labels_nuclei"][t].astype(np.uint16)
            # gold-truth segmentation exists for a subset of frames only, as in CTC; silver for every frame
            write_ctc_frame(out, seq, t, to_uint16(tl["images"]["nuclear"][t]), axes, frame_digits(n),
                            gold=lab if t % gt_every == 0 else None, silver=lab, markers=tra_markers(lab))
        write_ctc_tracks(out, seq, tl["tracks"])


# ---------------------------------------------------------------- coco

def write_coco(out: Path, n: int, seed: int, size: tuple[int, int], density: str | float | None = None,
               cell_radius: tuple[float, float] | None = (8, 20),
               split: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> None:
    """LIVECell-style: images/<name>.tif (phase contrast uint8) and coco_{train,val,test}.json."""
    splits = CocoSplits(n, split)
    for i in range(1, n + 1):
        rng = np.random.default_rng(child_seed(seed, i))
        f = render_field(size, child_seed(seed, i, 1), None, pick_density(rng, density),
                         pick_radius(rng, cell_radius), ("phase",))
        record = write_coco_image(out, i, f"SYNTH_Phase_{i:05d}.tif", to_uint8(f["images"]["phase"]))
        splits.add(record, label_image_to_coco(f["labels_cells"], i, start_ann_id=splits.next_ann_id))
    splits.write(out, "cellzoo synthetic phase contrast", [{"id": 1, "name": "cell"}])


# ---------------------------------------------------------------- lightmycells

def organelle_sets(rng: np.random.Generator, n: int, targets: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Which targets each image has: each kept with p=0.7, never none, and at least one gap in the set."""
    sets = []
    for _ in range(n):
        keep = tuple(t for t in targets if rng.uniform() < 0.7)
        sets.append(keep or (targets[int(rng.integers(len(targets)))],))
    if n >= 2 and len(targets) > 1 and all(len(s) == len(targets) for s in sets):
        sets[1] = sets[1][:-1]  # real LightMyCells images rarely have all four organelles
    return sets


def write_lightmycells(out: Path, n: int, seed: int, size: tuple[int, int], n_planes: int = 3,
                       study_modalities: tuple[str, ...] = ("BF", "PC"), density: str | float | None = None,
                       cell_radius: tuple[float, float] | None = (10, 22),
                       organelles: tuple[str, ...] = tuple(LMC_TARGETS)) -> None:
    """LightMyCells: Study_k/image_<id>_<BF|PC|DIC>_z<k>.ome.tiff inputs and image_<id>_<Organelle>.ome.tiff."""
    bad = [m for m in study_modalities if m not in LMC_INPUTS] + [o for o in organelles if o not in LMC_TARGETS]
    if bad or not study_modalities or not organelles or n_planes < 1:
        raise InputError(f"lightmycells: unknown names {bad}; inputs from {tuple(LMC_INPUTS)}, "
                         f"organelles from {tuple(LMC_TARGETS)}, n_planes >= 1")
    n_studies = max(1, min(len(study_modalities), n // 2))  # 2 studies from n >= 4 on
    sets = organelle_sets(np.random.default_rng(child_seed(seed, 0)), n, tuple(organelles))
    dzs = tuple(float(v) for v in (np.arange(n_planes) - (n_planes - 1) / 2) * 1.0)
    for i in range(1, n + 1):
        study = (i - 1) * n_studies // n  # contiguous blocks of images per study
        code = study_modalities[study]
        rng = np.random.default_rng(child_seed(seed, i))
        mods = (LMC_INPUTS[code], *(LMC_TARGETS[o] for o in sets[i - 1]))
        # the extra last plane at dz=0 gives in-focus targets while inputs span the focal series
        f = render_field(size, child_seed(seed, i, 1), None, pick_density(rng, density),
                         pick_radius(rng, cell_radius), mods, (*dzs, 0.0))
        planes = [to_uint16(f["images"][mods[0]][k]) for k in range(n_planes)]
        targets = {o: to_uint16(f["images"][LMC_TARGETS[o]][-1]) for o in sets[i - 1]}
        write_lightmycells_image(out, f"Study_{study + 1}", i, code, planes, targets, uuid_seed=seed)


# ---------------------------------------------------------------- isl

def write_isl(out: Path, n: int, seed: int, size: tuple[int, int], dz: float = 1.0,
              density: str | float | None = None, cell_radius: tuple[float, float] | None = (8, 20)) -> None:
    """In-silico labelling: field_###/ label-free inputs (2 brightfield planes, phase, DIC), targets, labels."""
    for i in range(1, n + 1):
        rng = np.random.default_rng(child_seed(seed, i))
        f = render_field(size, child_seed(seed, i, 1), None, pick_density(rng, density),
                         pick_radius(rng, cell_radius), ("nuclear", "membrane", "brightfield", "phase", "dic"),
                         (-float(dz), float(dz), 0.0))
        im = {key: to_uint16(stack) for key, stack in f["images"].items()}
        inputs = {"BRIGHTFIELD_z0": im["brightfield"][0], "BRIGHTFIELD_z1": im["brightfield"][1],
                  "PHASE_CONTRAST": im["phase"][2], "DIC": im["dic"][2]}
        write_labelfree_field(out, f"field_{i:03d}", inputs, {"DAPI": im["nuclear"][2], "CELLMASK": im["membrane"][2]},
                              {"nuclei": f["labels_nuclei"], "cells": f["labels_cells"]})


# ---------------------------------------------------------------- entry point

WRITERS = {"cellseg": write_cellseg, "ctc": write_ctc, "coco": write_coco, "lightmycells": write_lightmycells,
           "isl": write_isl, "objects": write_objects}


def layout_options(layout: str) -> tuple[str, ...]:
    """Option names `synthesize` accepts for a layout."""
    if layout not in WRITERS:
        raise InputError(f"unknown layout {layout!r}; choose one of {LAYOUTS + OTHER_LAYOUTS}")
    return tuple(inspect.signature(WRITERS[layout]).parameters)[4:]


def write_readme(out: Path, layout: str, n: int, seed: int, size: tuple[int, int], options: dict) -> None:
    """README.txt naming the generator and every setting, so a folder is self-describing and reproducible."""
    settings = {"generator": "cellzoo.synthetic.synthesize", "layout": layout, "n": n, "seed": seed,
                "size": list(size), "options": {k: options[k] for k in sorted(options)}}
    text = json.dumps(settings, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    (out / "README.txt").write_text(
        f"Synthetic microscopy data written by cellzoo.synthetic (layout {layout!r}).\n"
        "Images and labels are rendered from the same simulated specimen, so labels are exact.\n"
        "Regenerate with synthesize(layout, n, out, seed=seed, size=size, **options) using:\n" + text + "\n")


def synthesize(layout: str, n: int, out: str | Path, seed: int = 0, size: tuple[int, int] = (256, 256),
               **options) -> Path:
    """Write a synthetic data set of n images (frames for ctc) in `layout` under `out`; returns `out`."""
    allowed = layout_options(layout)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for layout {layout!r}; allowed: {allowed}")
    if int(n) < 1:
        raise InputError(f"n must be >= 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = (int(size[0]), int(size[1]))
    WRITERS[layout](out, int(n), int(seed), size, **options)
    write_readme(out, layout, int(n), int(seed), size, options)
    return out


# ---------------------------------------------------------------- overview pictures

def _read(path: Path) -> np.ndarray:
    """Read a written image (TIFF or PNG) as stored."""
    return read_image(path)[0]


def _display(img: np.ndarray) -> np.ndarray:
    """Percentile-stretch to [0, 1] RGB for display (3D stacks show their middle plane)."""
    img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[-1] != 3:
        img = img[img.shape[0] // 2]
    lo, hi = np.percentile(img, (0.5, 99.8))
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return img if img.ndim == 3 else np.repeat(img[..., None], 3, -1)


def _id_colours(labels: np.ndarray) -> np.ndarray:
    """A stable colour per label id (golden-ratio hues), so a track keeps its colour across frames."""
    from matplotlib.colors import hsv_to_rgb

    hue = (labels * 0.618034) % 1.0
    return hsv_to_rgb(np.stack([hue, np.full_like(hue, 0.85), np.ones_like(hue)], -1))


def _label_rgb(labels: np.ndarray) -> np.ndarray:
    """Label image in per-id colours on black (3D: maximum projection)."""
    labels = labels.max(0) if labels.ndim == 3 else labels
    return _id_colours(labels) * (labels > 0)[..., None]


def _outlined(img: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Display image with instance outlines in per-id colours."""
    from skimage.segmentation import find_boundaries

    rgb = _display(img)
    if labels is None:
        return rgb
    if labels.ndim == 3:
        labels = labels[labels.shape[0] // 2]
    edge = find_boundaries(labels, mode="inner")
    rgb[edge] = _id_colours(labels)[edge]
    return rgb


def _panels(layout_dir: Path, layout: str) -> list[tuple[str, np.ndarray]]:
    """(title, RGB image) pairs summarising a written layout."""
    d = layout_dir
    if layout == "cellseg":
        imgs = sorted((d / "images").glob("cell_*"))[:8]
        return [(p.name, _outlined(_read(p), _read(d / "labels" / f"{p.stem}_label.tiff"))) for p in imgs]
    if layout == "ctc":
        frames = sorted((d / "01").glob("t*.tif"))
        pick = sorted({int(round(k)) for k in np.linspace(0, len(frames) - 1, min(5, len(frames)))})
        seg = [_read(d / "01_ST" / "SEG" / f"man_seg{frames[k].stem[1:]}.tif") for k in pick]
        return ([(f"01/{frames[k].name}", _outlined(_read(frames[k]), s)) for k, s in zip(pick, seg)]
                + [(f"track ids t={k}", _label_rgb(s)) for k, s in zip(pick, seg)])
    if layout == "coco":
        from skimage.draw import polygon_perimeter

        doc = json.loads((d / "coco_train.json").read_text())
        out = []
        for im in doc["images"][:4]:
            rgb = _display(_read(d / "images" / im["file_name"]))
            for a in (a for a in doc["annotations"] if a["image_id"] == im["id"]):
                for poly in a["segmentation"]:
                    xy = np.asarray(poly).reshape(-1, 2)
                    rr, cc = polygon_perimeter(xy[:, 1], xy[:, 0], rgb.shape[:2], clip=True)
                    rgb[rr, cc] = _id_colours(np.array([a["id"]]))[0]
            out.append((im["file_name"], rgb))
        return out
    if layout == "lightmycells":
        out = []
        for k, study in enumerate(sorted(d.glob("Study_*"))):
            first = sorted(study.glob("image_*_z0.ome.tiff"))[0].name.split("_")[1]
            # all files of the first study's first image; later studies show their input modality only
            files = sorted(study.glob(f"image_{first}_*_z*.ome.tiff" if k else f"image_{first}_*.ome.tiff"))
            out += [(f"{study.name}/{p.name.replace('.ome.tiff', '')}", _display(_read(p))) for p in files]
        return out
    if layout == "isl":
        f = d / "field_001"
        names = ["input_BRIGHTFIELD_z0", "input_BRIGHTFIELD_z1", "input_PHASE_CONTRAST", "input_DIC",
                 "target_DAPI", "target_CELLMASK"]
        out = [(k, _display(_read(f / f"{k}.tif"))) for k in names]
        nuc, cel = _read(f / "label_nuclei.tif"), _read(f / "label_cells.tif")
        return out + [("label_nuclei", _label_rgb(nuc)), ("label_cells", _label_rgb(cel))]
    raise InputError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def overview_figure(layout_dir: str | Path, layout: str, out_png: str | Path, columns: int = 4,
                    dpi: int = 100) -> Path:
    """Draw a grid picture of a written layout (images with label outlines, modalities, frames) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    panels = _panels(Path(layout_dir), layout)
    if not panels:
        raise InputError(f"no {layout} images found", layout_dir)
    cols = min(columns if layout != "ctc" else 5, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows), dpi=dpi)
    canvas = FigureCanvasAgg(fig)  # Agg canvas without touching the global pyplot backend
    for k, (title, rgb) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"cellzoo.synthetic — {layout} layout", fontsize=10)
    fig.tight_layout()
    canvas.draw()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps noisy microscopy panels small enough to live in docs/
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    rgb.quantize(256, dither=Image.Dither.NONE).save(out_png, optimize=True)
    return out_png
