"""Synthetic "natural images" in COCO layout: textured geometric objects of several categories on cluttered
colour backgrounds, with exact instance masks.

A stand-in for COCO in CPU-sized tests and studies of cross-domain pretraining (CUPre): the objects are
of another kind than cells (colour, sharp corners, several categories, sizes from a few to ~100 px, partial
occlusion by objects painted later) and the images are RGB, while `write_coco` writes grey phase-contrast
cells. Written in the same on-disk layout as `write_coco` (images/, coco_{train,val,test}.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse, polygon

from cellzoo.io.coco import label_image_to_coco
from cellzoo.io.layouts.coco import write_coco_image
from cellzoo.synthetic.splits import CocoSplits, child_seed

__all__ = ["OBJECT_CATEGORIES", "render_objects", "write_objects"]

OBJECT_CATEGORIES = ("ellipse", "rectangle", "triangle", "star")


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) in [0, 1]: a colour gradient, low-frequency blotches and unannotated stripes or lines."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a, b = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    img = a * (1 - t) + b * t
    blotches = ndimage.gaussian_filter(rng.normal(size=(h, w, 3)), sigma=(max(h, w) / 12, max(h, w) / 12, 0))
    img += 0.6 * blotches / (np.abs(blotches).max() + 1e-6) * 0.3
    if rng.uniform() < 0.5:  # clutter that is not an object: stripes of a random direction
        phase = rng.uniform(0, 2 * np.pi)
        freq = rng.uniform(0.02, 0.08) * 2 * np.pi
        d = rng.uniform(0, np.pi)
        img += 0.08 * np.sin(freq * (np.cos(d) * xx + np.sin(d) * yy) * max(h, w) + phase)[..., None]
    return img


def _shape_mask(rng: np.random.Generator, category: str, cy: float, cx: float, r: float,
                size: tuple[int, int]) -> np.ndarray:
    """Boolean mask of one object of `category` centred at (cy, cx) with radius about r, randomly rotated."""
    mask = np.zeros(size, dtype=bool)
    angle = rng.uniform(0, 2 * np.pi)
    if category == "ellipse":
        rr, cc = ellipse(cy, cx, r, r * rng.uniform(0.4, 1.0), shape=size, rotation=angle)
    else:
        if category == "rectangle":
            aspect = rng.uniform(0.35, 1.0)
            corners = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]]) * r
        elif category == "triangle":
            corners = np.array([[np.cos(t), np.sin(t)] for t in np.linspace(0, 2 * np.pi, 4)[:3]]) * r
        else:  # five-pointed star
            radii = np.tile([1.0, rng.uniform(0.35, 0.55)], 5) * r
            t = np.linspace(0, 2 * np.pi, 11)[:10]
            corners = np.stack([radii * np.cos(t), radii * np.sin(t)], 1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = corners @ rot.T
        rr, cc = polygon(cy + pts[:, 1], cx + pts[:, 0], shape=size)
    mask[rr, cc] = True
    return mask


def _texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) fill of an object: a colour with stripes, a checkerboard or a shading gradient."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    colour = rng.uniform(0, 1, 3)
    kind = rng.integers(3)
    if kind == 0:
        period = rng.uniform(3, 10)
        d = rng.uniform(0, np.pi)
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(d) * xx + np.sin(d) * yy) / period)
    elif kind == 1:
        cell = int(rng.integers(3, 8))
        pattern = ((yy // cell + xx // cell) % 2).astype(float)
    else:
        d = rng.uniform(0, 2 * np.pi)
        pattern = (np.cos(d) * xx + np.sin(d) * yy) / max(h, w)
        pattern = (pattern - pattern.min()) / (np.ptp(pattern) + 1e-6)
    second = rng.uniform(0, 1, 3)
    return colour * (1 - 0.5 * pattern[..., None]) + second * 0.5 * pattern[..., None]


def render_objects(size: tuple[int, int], seed: int, n_objects: tuple[int, int] = (4, 14),
                  radius: tuple[float, float] = (5.0, 40.0)) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """One image: (H, W, 3) float RGB in [0, 1], the visible-instance label image and {label: category index}.

    Objects are painted in order, so later ones occlude earlier ones; an object with less than 40% (or 12
    px) of itself left visible is dropped from the labels (it stays in the picture, as clutter).
    """
    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    labels = np.zeros(size, dtype=np.int32)
    categories: dict[int, int] = {}
    full: dict[int, int] = {}
    count = int(rng.integers(n_objects[0], n_objects[1] + 1))
    # log-uniform radii: many small objects, a few large ones, as in natural scenes
    radii = np.exp(rng.uniform(np.log(radius[0]), np.log(radius[1]), count))
    for k, r in enumerate(radii, start=1):
        category = int(rng.integers(len(OBJECT_CATEGORIES)))
        cy, cx = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        mask = _shape_mask(rng, OBJECT_CATEGORIES[category], cy, cx, float(r), size)
        if mask.sum() < 12:
            continue
        tex = _texture(rng, size)
        img[mask] = tex[mask]
        labels[mask] = k
        categories[k], full[k] = category + 1, int(mask.sum())
    visible = np.bincount(labels.ravel(), minlength=count + 1)
    kept = {k: c for k, c in categories.items() if visible[k] >= max(12, 0.4 * full[k])}
    labels[~np.isin(labels, list(kept))] = 0
    img = img + rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1), labels, kept


def write_objects(out: Path, n: int, seed: int, size: tuple[int, int], n_objects: tuple[int, int] = (4, 14),
                 radius: tuple[float, float] = (5.0, 40.0), split: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> None:
    """COCO layout: images/object_#####.png (RGB) and coco_{train,val,test}.json with 4 object categories."""
    splits = CocoSplits(n, split)
    for i in range(1, n + 1):
        img, labels, categories = render_objects(size, child_seed(seed, i), tuple(n_objects), tuple(radius))
        name = f"object_{i:05d}.png"
        record = write_coco_image(out, i, name, np.round(img * 255).astype(np.uint8))
        anns = label_image_to_coco(labels, i, start_ann_id=splits.next_ann_id)
        for a in anns:
            a["category_id"] = categories[a["label"]]
        splits.add(record, anns)
    splits.write(out, "cellzoo synthetic textured shapes",
                 [{"id": k, "name": name} for k, name in enumerate(OBJECT_CATEGORIES, start=1)])
