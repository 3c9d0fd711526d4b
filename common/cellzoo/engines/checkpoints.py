"""Loading network weights from local checkpoint files, safely (tensors only, no pickled code)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from cellzoo.errors import InputError

logger = logging.getLogger(__name__)


def read_state_dict(path: str | Path, key: str = "model") -> dict:
    """The state dict stored in `path`: either the dict itself or under `key` (MONAI CheckpointSaver)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise InputError(f"cannot load checkpoint with weights_only=True ({type(err).__name__}: {err})", path) from err
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"checkpoint holds {type(state).__name__}, not a state dict", path)
    return state


def load_weights(network: nn.Module, path: str | Path | None, strict: bool = True, key: str = "model") -> nn.Module:
    """Load a local checkpoint into `network` (no-op when `path` is None); returns the network."""
    if path is None:
        return network
    network.load_state_dict(read_state_dict(path, key), strict=strict)
    logger.info("loaded weights from %s", path)
    return network


def latest_checkpoint(folder: str | Path, pattern: str = "*.pt") -> str | None:
    """The most recently written checkpoint in `folder` (None when there is none): the resume point."""
    folder = Path(folder)
    candidates = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return str(candidates[-1]) if candidates else None
