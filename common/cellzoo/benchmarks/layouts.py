"""The benchmark's samples written in the layout each bundle reads, with the same item names in all of them.

| layout | bundles | what is written |
| --- | --- | --- |
| `cellseg` | MEDIAR | images/<name>.tif, labels/<name>_label.tiff (labelled samples only) |
| `cellseg_unlabelled` | PMC | the same, plus images/<name>.tif of the unlabelled samples (frames without masks) |
| `coco` | CUPre | images/<name>.tif, annotations.json; every image also in <folder>_unlabelled/ for MoCo |
| `isl` | ISL | <name>/input_FLUO.tif + label_nuclei.tif, or <name>/input_PLANE_z<k>.tif + target_DAPI.tif |
| `lightmycells` | UNETR | Study_1/image_<name>_PC_z<k>.ome.tiff + image_<name>_Nucleus.ome.tiff |

A LightMyCells item is named Study_1_image_<id>, so label-free samples are written under that name in the
ISL layout too. Files are written by the layouts' own writers (`cellzoo.io.layouts`); this module decides only
which samples go where.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cellzoo.benchmarks.samples import LabelFreeSample, NucleusSample
from cellzoo.errors import InputError
from cellzoo.io import label_image_to_coco, write_tiff
from cellzoo.io.coco import write_coco_json
from cellzoo.io.layouts import (
    write_cellseg_item,
    write_coco_image,
    write_labelfree_field,
    write_lightmycells_image,
)

__all__ = ["LAYOUTS", "LIGHTMYCELLS_STUDY", "item_name", "write_layout"]

LIGHTMYCELLS_STUDY = "Study_1"
NUCLEUS_LAYOUTS = ("cellseg", "cellseg_unlabelled", "coco", "isl")
LABELFREE_LAYOUTS = ("isl", "lightmycells")
LAYOUTS = tuple(dict.fromkeys(NUCLEUS_LAYOUTS + LABELFREE_LAYOUTS))
FLUORESCENCE_INPUT = "FLUO"   # ISL: the nucleus image as its one input plane
PLANE_INPUT = "PLANE_z"       # ISL: the label-free planes, PLANE_z0, PLANE_z1, ...


def item_name(sample_name: str, kind: str) -> str:
    """The item name the bundles' datalists give a sample (what studies split and name in their tables)."""
    return f"{LIGHTMYCELLS_STUDY}_image_{sample_name}" if kind == "labelfree" else sample_name


def write_layout(layout: str, labelled: Sequence, out: str | Path, unlabelled: Sequence[NucleusSample] = ()) -> Path:
    """Write samples (all NucleusSample or all LabelFreeSample) in `layout` under `out`; returns `out`.

    `unlabelled` nucleus images join where a layout has room for them (PMC's frames, CUPre's MoCo folder
    `<out>_unlabelled`, which also holds the labelled images); a study leaves its test items out of
    label-free pretraining by name (`exclude_items`), so the test images may lie there.
    """
    out = Path(out)
    kind = "labelfree" if labelled and isinstance(labelled[0], LabelFreeSample) else "nuclei"
    allowed = LABELFREE_LAYOUTS if kind == "labelfree" else NUCLEUS_LAYOUTS
    if layout not in allowed:
        raise InputError(f"layout {layout!r} does not hold {kind} samples; choose one of {allowed}")
    if kind == "labelfree":
        (_write_lightmycells if layout == "lightmycells" else _write_isl_labelfree)(labelled, out)
        return out
    writer = {"cellseg": _write_cellseg, "cellseg_unlabelled": _write_cellseg, "coco": _write_coco,
              "isl": _write_isl_nuclei}[layout]
    writer(list(labelled), list(unlabelled) if layout in ("cellseg_unlabelled", "coco") else [], out)
    return out


def _write_cellseg(labelled: Sequence[NucleusSample], unlabelled: Sequence[NucleusSample], out: Path) -> None:
    for sample in labelled:
        write_cellseg_item(out, sample.name, sample.image, sample.labels)
    for sample in unlabelled:
        write_cellseg_item(out, sample.name, sample.image)


def _write_coco(labelled: Sequence[NucleusSample], unlabelled: Sequence[NucleusSample], out: Path) -> None:
    images, annotations = [], []
    for image_id, sample in enumerate(labelled, start=1):
        images.append(write_coco_image(out, image_id, f"{sample.name}.tif", sample.image))
        annotations += label_image_to_coco(sample.labels, image_id, start_ann_id=len(annotations) + 1)
    write_coco_json(out / "annotations.json", images, annotations)
    for sample in labelled + unlabelled:  # MoCo's images: a plain folder of every image, labels unused
        write_tiff(out.parent / f"{out.name}_unlabelled" / f"{sample.name}.tif", sample.image, "YX")


def _write_isl_nuclei(labelled: Sequence[NucleusSample], unlabelled: Sequence[NucleusSample], out: Path) -> None:
    for sample in labelled:
        write_labelfree_field(out, sample.name, {FLUORESCENCE_INPUT: sample.image}, labels={"nuclei": sample.labels})


def _write_isl_labelfree(samples: Sequence[LabelFreeSample], out: Path) -> None:
    for sample in samples:
        planes = {f"{PLANE_INPUT}{k}": plane for k, plane in enumerate(sample.planes)}
        write_labelfree_field(out, item_name(sample.name, "labelfree"), planes, {"DAPI": sample.target})


def _write_lightmycells(samples: Sequence[LabelFreeSample], out: Path) -> None:
    for sample in samples:
        write_lightmycells_image(out, LIGHTMYCELLS_STUDY, sample.name, "PC", list(sample.planes),
                                 {"Nucleus": sample.target})
