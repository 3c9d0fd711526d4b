"""Predict an image larger than memory region by region, writing the result into an OME-Zarr as it goes.

`stream_predict(bundle, source, output)` reads the image lazily (cellzoo.io.lazy: OME-Zarr or tiled TIFF)
in regions of `region_size` px with `halo` px of context on each side (`halo_tiles`, as whole-image
prediction tiles its network outputs), runs the bundle's own inference config on each region's context
(`RegionPredictor`: the config parsed and the networks loaded once; sliding windows, TTA and ensembles as
configured), and writes what belongs to the region's core:

- instance labels (MEDIAR, CUPre, ISL): the cells whose centroid lies in the core, whole (their pixels in
  the halo included, which is why the halo must exceed a cell's diameter), with global ids
  `region * ID_STRIDE + k` (unique without a pass over the whole image, and the same when a region is
  redone). A cell already written by a neighbouring region (more than half of its pixels taken: the same
  cell, seen from both sides) is not written again, so no cell is duplicated or cut at a border. The
  output is an NGFF 0.5 label image (uint32, the input's pixel size) and cells.csv (cellzoo's
  measurements, image coordinates);
- boxes (PMC): the boxes whose centre lies in the core, then non-maximum suppression across borders:
  boxes.csv and boxes.json (COCO, [x, y, w, h]);
- a stain image (UNETR): the core of each region's prediction, as an NGFF 0.5 float32 image.

Memory holds one region's context, its prediction and the matching window of the output, whatever the
image size. Regions that are constant (blank background) are skipped: nothing to find there. The run is
resumable: `stream.json` in the output records the settings and the regions written; a rerun with the
same settings continues with the others (a region interrupted mid-write is redone; its ids are the same).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cellzoo.errors import InputError
from cellzoo.inference.predictor import halo_tiles
from cellzoo.inference.single_image import read_output, write_input
from cellzoo.io.files import write_text
from cellzoo.io.lazy import LazyImage, open_lazy

__all__ = ["ID_STRIDE", "RegionPredictor", "stream_predict"]

ID_STRIDE = 1 << 16   # cells per region at most; regions at most 2**32 / ID_STRIDE - 1
STATE = "stream.json"
LEVEL = "0"
CHUNK = 1024


class RegionPredictor:
    """One bundle's inference config, parsed once, run on one region (a YX or YXC array) at a time."""

    def __init__(self, bundle: str, checkpoint=None, quick: bool | None = None,
                 settings: dict | None = None, work: str | Path | None = None):
        """`checkpoint`: one path, a list of paths (an ensemble), or None for the bundle's shipped weights."""
        from monai.bundle import ConfigParser

        from cellzoo.bundles import as_config_data, bundle_path, config_files
        from cellzoo.shipped_weights import shipped_weights

        self.bundle = bundle
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="cellzoo_regions_"))
        settings = dict(settings or {})
        if checkpoint is None:
            shipped = shipped_weights(bundle)
            if shipped is None:
                raise InputError(f"--checkpoint is required: {bundle} ships no trained weights")
            checkpoint, settings = [shipped.checkpoint], {**shipped.settings, **settings}
            quick = shipped.quick if quick is None else quick
        checkpoints = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]
        self.input, self.output = self.work / "input", self.work / "output"
        write_input(bundle, np.zeros((64, 64), np.float32), self.input)  # the datalist lists it
        parser = ConfigParser()
        parser.read_config(config_files(bundle, "inference", bool(quick)))
        parser["bundle_root"] = str(bundle_path(bundle))
        # the extras (overlay PNGs, worker processes) cost time per region and are not kept: off where a
        # config has them
        optional = {key: value for key, value in (("num_workers", 0), ("write_extras", False)) if key in parser}
        parser.update(as_config_data({**settings, **optional, "input_dir": str(self.input),
                                      "output_dir": str(self.output), "checkpoints": [str(c) for c in checkpoints]}))
        if "initialize" in parser:  # brief input errors, determinism
            parser.get_parsed_content("initialize")
        self.evaluator = parser.get_parsed_content("evaluator")

    def __call__(self, region: np.ndarray):
        write_input(self.bundle, region, self.input)
        shutil.rmtree(self.output, ignore_errors=True)
        self.evaluator.run()
        return read_output(self.bundle, self.output)


# ---- the output store ----
def _ngff_attributes(kind: str, axes: str, size_um, source: Path) -> dict:
    scale = [1.0, 1.0] if size_um is None else [float(size_um[0]), float(size_um[1])]
    unit = {} if size_um is None else {"unit": "micrometer"}
    multiscales = [{"name": source.name, "axes": [{"name": a, "type": "space", **unit} for a in axes],
                    "datasets": [{"path": LEVEL, "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]
    ome = {"version": "0.5", "multiscales": multiscales}
    if kind == "labels":
        ome["image-label"] = {"version": "0.5", "source": {"image": str(source)}}
    return {"ome": ome}


def _open_output(output: Path, kind: str, image: LazyImage, state: dict, overwrite: bool):
    """The output's array (None for boxes) and the regions already written (created, or reopened to resume)."""
    import zarr

    saved = output / STATE
    if saved.is_file() and not overwrite:
        previous = json.loads(saved.read_text())
        if {k: previous.get(k) for k in state} != state:
            raise InputError("the output holds a run with other settings (another image, bundle or region "
                             "size): choose another --output or pass --overwrite", output)
        group = zarr.open_group(str(output), mode="r+")
        return (group[LEVEL] if kind != "boxes" else None), set(previous.get("done", []))
    if output.exists():
        if not overwrite and any(output.iterdir()):
            raise InputError("the output folder exists and is not a run of this image; pass --overwrite", output)
        shutil.rmtree(output)
    group = zarr.open_group(str(output), mode="w", zarr_format=3)
    array = None
    if kind != "boxes":
        height, width = image.yx
        array = group.create_array(LEVEL, shape=(height, width), chunks=(min(CHUNK, height), min(CHUNK, width)),
                                   dtype="uint32" if kind == "labels" else "float32", fill_value=0)
        group.attrs.update(_ngff_attributes(kind, "yx", image.physical_size_um, image.path))
    _write_state(output, {**state, "done": []})
    return array, set()


def _write_state(output: Path, state: dict) -> None:
    write_text(output / STATE, json.dumps(state, indent=1))  # atomic: an interruption leaves the last state


# ---- merging one region ----
def _keep_labels(local: np.ndarray, core: tuple[slice, slice], origin: tuple[int, int]) -> list[int]:
    """Local ids whose centroid lies in the core (core and origin in image coordinates)."""
    from scipy import ndimage

    ids = np.unique(local[local > 0])
    if ids.size == 0:
        return []
    centres = ndimage.center_of_mass(np.ones_like(local, dtype=np.uint8), local, ids)
    keep = []
    for label, (cy, cx) in zip(ids.tolist(), centres):
        y, x = cy + origin[0], cx + origin[1]
        if core[0].start <= y < core[0].stop and core[1].start <= x < core[1].stop:
            keep.append(int(label))
    return keep


def _merge_labels(array, local: np.ndarray, tile, index: int) -> tuple[np.ndarray, list[int]]:
    """Write the region's kept cells into the output window; returns the window as written and their ids."""
    from scipy import ndimage

    context = tile.context
    window = np.asarray(array[context])
    written = []
    keep = _keep_labels(local, tile.core, (context[0].start, context[1].start))
    if len(keep) >= ID_STRIDE:
        raise InputError(f"a region holds {len(keep)} cells, more than {ID_STRIDE - 1}: use a smaller --region-size")
    boxes = ndimage.find_objects(local)  # each cell is compared within its own box, not the whole window
    for rank, label in enumerate(keep, start=1):
        box, gid = boxes[label - 1], index * ID_STRIDE + rank
        mask, part = local[box] == label, window[box]
        taken = (part[mask] != 0) & (part[mask] != gid)
        if taken.mean() > 0.5:  # written by a neighbour already: the same cell seen from both sides
            continue
        part[mask & ((part == 0) | (part == gid))] = gid
        written.append(gid)
    array[context] = window
    return window, written


def _cell_rows(window: np.ndarray, tile, gids: list[int], region: np.ndarray) -> list[dict]:
    """cellzoo's measurements of the cells `gids` of the written window, in image coordinates."""
    from cellzoo.postprocess.measure import measure_cells

    if not gids:
        return []
    labels = np.where(np.isin(window, gids), window, 0)
    rows = measure_cells(labels, region, channel_axis=-1 if region.ndim == 3 else None)
    y0, x0 = tile.context[0].start, tile.context[1].start
    for row in rows:
        for key in ("centroid_y", "bbox_min_y", "bbox_max_y"):
            row[key] += y0
        for key in ("centroid_x", "bbox_min_x", "bbox_max_x"):
            row[key] += x0
    return rows


def _boxes_in_core(prediction, tile) -> list[list[float]]:
    y0, x0 = tile.context[0].start, tile.context[1].start
    rows = []
    for (a, b, c, d), score in zip(prediction.boxes.tolist(), prediction.scores.tolist()):
        cy, cx = (a + c) / 2 + y0, (b + d) / 2 + x0
        if tile.core[0].start <= cy < tile.core[0].stop and tile.core[1].start <= cx < tile.core[1].stop:
            rows.append([a + y0, b + x0, c + y0, d + x0, score])
    return rows


# ---- the run ----
def stream_predict(bundle: str, source: str | Path, output: str | Path, checkpoint=None,
                   quick: bool | None = None, settings: dict | None = None, level: int = 0,
                   region_size: int = 2048, halo: int = 128, overwrite: bool = False, progress: bool = True,
                   max_regions: int | None = None) -> dict:
    """Predict `source` region by region into `output` (an OME-Zarr folder); returns a summary.

    `checkpoint`: one path, a list (an ensemble) or None (the shipped weights), as RegionPredictor takes.
    `max_regions` stops after that many regions were predicted in this call (a resumable partial run)."""
    if int(halo) < 0 or int(region_size) < 64:
        raise InputError(f"--region-size must be at least 64 and --halo non-negative, got {region_size}, {halo}")
    source, output = Path(source), Path(output)
    image = open_lazy(source, level)
    kind = {"pmc_detection": "boxes", "unetr_lightmycells": "image"}.get(bundle, "labels")
    state = {"bundle": bundle, "input": str(source.resolve()), "level": int(level), "shape": list(image.yx),
             "region_size": int(region_size), "halo": int(halo)}
    tiles = halo_tiles(image.yx, int(region_size), int(halo))
    if len(tiles) >= (1 << 32) // ID_STRIDE:
        raise InputError(f"{len(tiles)} regions are too many for unique ids: use a larger --region-size")
    array, done = _open_output(output, kind, image, state, overwrite)
    parts = output / "parts"
    parts.mkdir(exist_ok=True)
    predictor, started, predicted, skipped = None, time.perf_counter(), 0, 0
    bar = tqdm(total=len(tiles), initial=len(done), unit="region", desc="regions", disable=not progress)
    for index, tile in enumerate(tiles):
        if index in done:
            continue
        if max_regions is not None and predicted >= max_regions:
            break
        region = image.region(*tile.context)
        if np.ptp(region) == 0:  # blank: no cell to find, nothing to write
            skipped += 1
        else:
            if predictor is None:
                predictor = RegionPredictor(bundle, checkpoint, quick, settings)
            _write_region(kind, predictor(region), array, tile, index, region, parts)
            predicted += 1
        done.add(index)
        _write_state(output, {**state, "done": sorted(done)})
        bar.update(1)
    bar.close()
    complete = len(done) == len(tiles)
    if complete:
        _gather(kind, output, parts)
    return {"regions": len(tiles), "predicted": predicted, "skipped_blank": skipped, "complete": complete,
            "seconds": round(time.perf_counter() - started, 1), "output": str(output)}


def _write_region(kind: str, prediction, array, tile, index: int, region: np.ndarray, parts: Path) -> None:
    part = parts / f"region_{index:06d}.json"
    if kind == "labels":
        window, gids = _merge_labels(array, prediction.labels, tile, index)
        rows = _cell_rows(window, tile, gids, region)
    elif kind == "boxes":
        rows = [dict(zip(("y0", "x0", "y1", "x1", "score"), box)) for box in _boxes_in_core(prediction, tile)]
    else:
        (cy, cx), (oy, ox) = tile.core, (tile.context[0].start, tile.context[1].start)
        array[tile.core] = prediction.image[cy.start - oy:cy.stop - oy, cx.start - ox:cx.stop - ox]
        rows = []
    part.write_text(json.dumps(rows))


def _gather(kind: str, output: Path, parts: Path) -> None:
    """The per-region tables joined: cells.csv, or boxes after NMS across region borders."""
    rows = [row for path in sorted(parts.glob("region_*.json")) for row in json.loads(path.read_text())]
    if kind == "labels":
        from cellzoo.postprocess.measure import write_measurements_csv

        write_measurements_csv(rows, output / "cells.csv")
    elif kind == "boxes":
        rows = _nms(rows)
        with open(output / "boxes.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["y0", "x0", "y1", "x1", "score"])
            writer.writeheader()
            writer.writerows(rows)
        annotations = [{"id": k + 1, "image_id": 1, "category_id": 1, "score": r["score"],
                        "bbox": [r["x0"], r["y0"], r["x1"] - r["x0"], r["y1"] - r["y0"]]} for k, r in enumerate(rows)]
        (output / "boxes.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": annotations,
                                                       "categories": [{"id": 1, "name": "cell"}]}))


def _nms(rows: list[dict], iou: float = 0.5) -> list[dict]:
    import torch
    from torchvision.ops import nms

    if not rows:
        return []
    boxes = torch.tensor([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in rows], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([r["score"] for r in rows], dtype=torch.float32), iou)
    return [rows[i] for i in sorted(keep.tolist())]
