"""Seeds and train/val/test splits shared by the synthetic writers (cells in `layouts`, objects in `objects`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellzoo.io.coco import write_coco_json

__all__ = ["CocoSplits", "child_seed", "split_counts"]


def child_seed(seed: int, *keys: int) -> int:
    """Independent, reproducible seed for image/sequence `keys` of a data set with seed `seed`."""
    return int(np.random.SeedSequence([int(seed), *keys]).generate_state(1)[0])


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Deterministic train/val/test sizes; at least one image per split when n >= 3."""
    n_val, n_test = (int(round(n * f)) for f in fractions[1:])
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_test = min(n_test, n - n_val)
    return n - n_val - n_test, n_val, n_test


class CocoSplits:
    """Images 1..n and their annotations, gathered into coco_{train,val,test}.json in order (first the train part).

    Annotation ids run on across the parts (`next_ann_id`), so the three files can be merged.
    """

    def __init__(self, n: int, fractions: tuple[float, float, float]):
        self.n_train, self.n_val, _ = split_counts(n, tuple(fractions))
        self.parts: dict[str, list[tuple[dict, list[dict]]]] = {"train": [], "val": [], "test": []}
        self.next_ann_id = 1

    def add(self, image: dict, annotations: list[dict]) -> None:
        """Add image `image["id"]` (1-based, in order) with its annotations."""
        i = image["id"]
        part = "train" if i <= self.n_train else "val" if i <= self.n_train + self.n_val else "test"
        self.parts[part].append((image, annotations))
        self.next_ann_id += len(annotations)

    def write(self, out: Path, description: str, categories: list[dict]) -> None:
        for part, items in self.parts.items():
            write_coco_json(out / f"coco_{part}.json", [image for image, _ in items],
                            [a for _, anns in items for a in anns], categories, f"{description} ({part})")
