"""Network weights from local checkpoint files: read safely (tensors only), load strictly or transfer.

`load_weights` (inference, resuming a model) needs every tensor to fit; `transfer_weights` (a bundle's
`init_ckpt`: a pretext or pretraining checkpoint into a downstream network) copies what fits and reports the
rest. Both match tensors by name and shape with MONAI's `copy_model_state`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from fnmatch import fnmatch
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.utils import copy_model_state
from torch import nn

from cellzoo.errors import InputError

logger = logging.getLogger(__name__)

# A best model saved with MONAI's key_metric_save_state also holds ignite's record of the best score
# under this key (see cellzoo.engines.resume); it is not a weight.
CHECKPOINTER = "checkpointer"


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
    if isinstance(state, dict) and isinstance(state.get(CHECKPOINTER), dict):
        state = {k: v for k, v in state.items() if k != CHECKPOINTER}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"checkpoint holds {type(state).__name__}, not a state dict of tensors", path)
    return state


@dataclass(frozen=True)
class WeightMatch:
    """How a checkpoint's tensors map onto a network's, by name and shape."""

    loaded: list[str]
    missing: list[str]  # network tensors the file does not provide
    unexpected: list[str]  # file tensors with no tensor of that name in the network
    mismatched: list[str]  # names in both, shapes differing

    def summary(self) -> str:
        """One line for logs and errors."""
        parts = [f"{len(self.loaded)} tensors loaded"]
        for what, names in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("of another shape", self.mismatched)):
            if names:
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                parts.append(f"{len(names)} {what} ({shown})")
        return "; ".join(parts)


def _match(network: nn.Module, state: dict) -> tuple[dict, WeightMatch]:
    """The network's state dict with every fitting tensor of `state` copied in, and the match report."""
    own = network.state_dict()
    updated, loaded, _ = copy_model_state(own, state, inplace=False)
    mismatched = sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
    match = WeightMatch(loaded=sorted(loaded), missing=sorted(set(own) - set(loaded) - set(mismatched)),
                        unexpected=sorted(set(state) - set(own)), mismatched=mismatched)
    return updated, match


def load_weights(network: nn.Module, path: str | Path | None, key: str = "model", config_hint: bool = True) -> nn.Module:
    """Load a checkpoint whose every tensor fits `network` (no-op when `path` is None); returns the network.

    `config_hint`: a checkpoint of another size is refused with the bundle runner's remedy (quick.yaml);
    `cellzoo predict`, which has its own (--quick), turns it off."""
    if path is None:
        return network
    updated, match = _match(network, read_state_dict(path, key))
    if match.missing or match.unexpected or match.mismatched:
        # the usual cause under `python -m monai.bundle run`: quick and paper-scale configs mixed up
        hint = ("; if it was trained with quick.yaml, put quick.yaml at the end of --config_file (and leave it out "
                "for a paper-scale one)") if config_hint and (match.mismatched or match.unexpected) else ""
        raise InputError(f"checkpoint does not fit the network: {match.summary()}{hint}", path)
    network.load_state_dict(updated)
    logger.info("loaded weights from %s", path)
    return network


def transfer_weights(network: nn.Module, path: str | Path | None, rename: Callable[[dict], dict] | None = None,
                     key: str = "model", new_layers: Sequence[str] = ()) -> WeightMatch | None:
    """Copy every tensor of a checkpoint that fits `network` by name and shape; log and return the match.

    This is how `init_ckpt` initialises every bundle's training (None: keep the network's own initial
    weights). `rename` maps the file's names first (e.g. a torchvision encoder file onto an smp encoder).
    A file of which no tensor fits is an error: it is surely the wrong file. `new_layers` are name
    patterns (fnmatch) of the task-specific layers that are meant to start anew (a class or output head
    of another size): their shape differences are reported as intended, any other one as a warning.
    """
    if path is None:
        return None
    state = read_state_dict(path, key)
    if rename is not None:
        state = rename(state)
    updated, match = _match(network, state)
    if not match.loaded:
        example = next(iter(network.state_dict()), "?")
        raise InputError(f"no tensor of this checkpoint fits the network (it expects names like {example!r}): "
                         f"{match.summary()}", path)
    network.load_state_dict(updated)
    intended = [name for name in match.mismatched if any(fnmatch(name, pattern) for pattern in new_layers)]
    unforeseen = [name for name in match.mismatched if name not in intended]
    if unforeseen:  # the same names with other shapes: most likely a network of another size
        logger.warning("init_ckpt %s: %s; is it from a network of another size (quick.yaml or not)?", path,
                       match.summary())
    else:
        logger.info("init_ckpt %s: %s", path, match.summary())
    if intended:
        logger.info("init_ckpt %s: the %d tensors of the task's own head layers start anew, as intended (%s)", path,
                    len(intended), ", ".join(intended[:3]) + (", ..." if len(intended) > 3 else ""))
    return match
