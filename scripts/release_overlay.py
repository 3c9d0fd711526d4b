"""The overlay picture of a shipped model's prediction on one real test image (scripts/train_release_models.py).

Instance segmenters: predicted outlines (yellow) over the image; PMC: predicted boxes; label-free models:
input plane, prediction and true stain side by side. The prediction is the one the evaluation wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cellzoo.io import read_image, read_labels


def _grey(image: np.ndarray) -> np.ndarray:
    """Percentile-stretched to [0, 1] for display."""
    low, high = np.percentile(image, (1, 99.5))
    return np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)


def _find(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} under {folder}")
    return found[0]


def draw_overlay(release, folder: Path, record: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from skimage.segmentation import find_boundaries

    name, data, eval_dir = record["data"]["test_items"][0], folder / "data", folder / "eval"
    layout = record["data"]["layout"]
    if release.kind == "labelfree":
        tile = name.rsplit("_image_", 1)[-1]
        panels = [("phase contrast (middle plane)", _find(data, f"*{tile}_PC_z1*")),
                  ("predicted nuclear stain", _find(eval_dir, f"*{tile}*Nucleus*")),
                  ("true DAPI", _find(data, f"*{tile}_Nucleus*"))]
        figure, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        for axis, (title, file) in zip(axes, panels):
            axis.imshow(_grey(np.squeeze(read_image(file, axes="YX")[0])), cmap="gray")
            axis.set_title(title, fontsize=9)
    else:
        image_file = _find(data, f"{name}/input_FLUO.tif") if layout == "isl" else _find(data / "images", f"{name}.tif")
        image = _grey(np.squeeze(read_image(image_file, axes="YX")[0]))
        figure, axes = plt.subplots(1, 1, figsize=(6, 6 * image.shape[0] / image.shape[1]))
        axes = [axes]
        axes[0].imshow(image, cmap="gray")
        if release.bundle == "pmc_detection":
            boxes = json.loads(_find(eval_dir, f"*{name}*.json").read_text())
            for box in boxes.get("annotations", boxes) if isinstance(boxes, dict) else boxes:
                x, y, w, h = box["bbox"]
                axes[0].add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="yellow", linewidth=0.8))
            count = len(boxes.get("annotations", boxes)) if isinstance(boxes, dict) else len(boxes)
        else:
            labels = read_labels(_find(eval_dir, f"*{name}*label*.tif*"))
            outline = np.ma.masked_where(~find_boundaries(labels, mode="inner"), np.ones(labels.shape))
            axes[0].imshow(outline, cmap="autumn_r", vmin=0, vmax=1, interpolation="nearest")
            count = len(np.unique(labels)) - 1
        axes[0].set_title(f"{release.bundle}: {count} cells on {name}", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
