"""The trained weights a bundle ships: `<bundle>/models/release.json` and the checkpoint it names.

`scripts/train_release_models.py` trains them and writes the record; `cellzoo predict` uses them when no
`--checkpoint` is given, and the tests check that they load and still give the recorded output.

The record holds the checkpoint's path inside the bundle, whether it fits the quick network, the inference
settings it needs (e.g. ISL's input planes), its sha256, what it was trained and scored on, and a reference:
the digest of the network's raw output on a fixed synthetic image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cellzoo.bundles import bundle_path
from cellzoo.errors import InputError

__all__ = ["RECORD", "Shipped", "output_digest", "reference_image", "shipped_weights"]

RECORD = Path("models") / "release.json"


@dataclass(frozen=True)
class Shipped:
    """A bundle's shipped checkpoint and how to use it."""

    checkpoint: Path
    quick: bool
    settings: dict
    sha256: str
    record: dict


def shipped_weights(bundle: str | Path) -> Shipped | None:
    """The bundle's shipped weights, or None when it ships none; a record whose file is missing is an error."""
    root = bundle_path(bundle)
    path = root / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    checkpoint = root / record["checkpoint"]
    if not checkpoint.is_file():
        raise InputError(f"the shipped checkpoint {record['checkpoint']} named in {RECORD} is missing", checkpoint)
    return Shipped(checkpoint, bool(record["quick"]), dict(record.get("settings") or {}), record["sha256"], record)


def reference_image(channels: int, size: int = 96) -> torch.Tensor:
    """A fixed (1, C, size, size) input: a synthetic nucleus field in [0, 1], the same plane in every channel."""
    from cellzoo.synthetic import render_field

    field = render_field((size, size), 7, None, "medium", (8, 14), ("nuclear",), (0.0,), photons=200.0)
    plane = np.clip(np.squeeze(field["images"]["nuclear"]), 0, 1).astype(np.float32)  # one focal plane: YX
    return torch.from_numpy(plane)[None, None].repeat(1, channels, 1, 1)


def output_digest(output) -> list[float]:
    """[sum, mean absolute value, count] over every number of a network's output (tensors, lists, dicts)."""
    values = [t.detach().float().flatten() for t in _tensors(output)]
    flat = torch.cat(values) if values else torch.zeros(0)
    return [float(flat.sum()), float(flat.abs().mean()) if flat.numel() else 0.0, float(flat.numel())]


def _tensors(output):
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, dict):
        for key in sorted(output):
            yield from _tensors(output[key])
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from _tensors(item)
