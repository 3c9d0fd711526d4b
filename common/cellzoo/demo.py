"""`make demo` before any bundle exists: synthesise, draw, measure and self-evaluate a small dataset."""

from __future__ import annotations

import json
from pathlib import Path

from cellzoo.evaluation import evaluate_instance_folders
from cellzoo.io import read_image, read_labels
from cellzoo.postprocess.measure import measure_files
from cellzoo.postprocess.overlay import write_overlay_png
from cellzoo.synthetic import overview_figure, synthesize


def run_demo(out: str | Path, seed: int = 0, n_images: int = 6, size: tuple[int, int] = (256, 256)) -> dict:
    """Write a CellSeg-layout dataset, its overview picture, a measurement table and a self-evaluation."""
    out = Path(out)
    data = synthesize("cellseg", n_images, out / "data", seed=seed, size=size)
    print(f"[1/4] synthetic NeurIPS-CellSeg layout: {n_images} images in {data}")

    overview_figure(data, "cellseg", out / "overview.png")
    print(f"[2/4] overview picture: {out / 'overview.png'}")

    image = sorted((data / "images").iterdir())[0]
    label = data / "labels" / f"{image.name.split('.')[0]}_label.tiff"
    rows = measure_files(image, label, out / "measurements.csv")
    write_overlay_png(out / "overlay.png", read_image(image)[0], read_labels(label))
    print(f"[3/4] measured {len(rows)} cells of {image.name}: {out / 'measurements.csv'}, {out / 'overlay.png'}")

    # Labels scored against themselves must give F1 = AP = 1: a check that the pipeline is wired right.
    result = evaluate_instance_folders(data / "labels", data / "labels", iou=0.5)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"[4/4] labels vs themselves: F1@0.5 = {result['f1']:.3f}, n_images = {result['n_images']}")
    return result
