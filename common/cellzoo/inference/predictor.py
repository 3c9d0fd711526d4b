"""Whole-image prediction: stride padding, MONAI sliding windows, flip TTA, ensembles and halo tiling.

`WholeImagePredictor` predicts one image; `WholeImageInferer` is the same as a MONAI Inferer for engines.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import numpy as np
import torch
from monai.inferers import Inferer, SlidingWindowInferer
from monai.transforms import SpatialPad, pad_nd
from monai.transforms.utils import compute_divisible_spatial_size
from torch import Tensor, nn
from tqdm.auto import tqdm

from cellzoo.errors import InputError
from cellzoo.inference.tta import FlipTTA

logger = logging.getLogger(__name__)

# Mirror padding (edge pixel repeated) instead of zeros: a zero border is an artificial dark edge that
# networks answer with spurious boundaries or cells. "symmetric" rather than torch's "reflect" because
# reflect cannot pad by more than the image size minus one, which happens when a small image is padded
# up to roi_size; MONAI runs "symmetric" through np.pad, which mirrors repeatedly.
PAD_MODE = "symmetric"


class Tile(NamedTuple):
    """One tile: `core` is written to the output, `context` (core plus halo, clipped) is predicted."""

    core: tuple[slice, ...]
    context: tuple[slice, ...]


def halo_tiles(shape: Sequence[int], tile_size: int, halo: int) -> list[Tile]:
    """Split `shape` into near-equal cores of at most tile_size, each with `halo` px of clipped context."""
    per_axis = []
    for size in shape:
        count = math.ceil(size / tile_size)
        # Equal cores rather than tile_size steps, so the last tile is never a thin sliver.
        edges = np.linspace(0, size, count + 1).round().astype(int)
        per_axis.append([(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])])
    tiles = []
    for bounds in itertools.product(*per_axis):
        core = tuple(slice(a, b) for a, b in bounds)
        context = tuple(slice(max(0, a - halo), min(size, b + halo)) for (a, b), size in zip(bounds, shape))
        tiles.append(Tile(core, context))
    return tiles


def stride_padding(
    shape: Sequence[int], roi_size: Sequence[int], multiple: int
) -> tuple[tuple[int, int], ...]:
    """(before, after) pad per spatial axis so each side is a multiple of `multiple` and >= roi_size."""
    divisible = compute_divisible_spatial_size(tuple(shape), multiple)
    target = [max(int(d), int(r)) for d, r in zip(divisible, roi_size)]
    # SpatialPad splits the padding evenly between both sides, which keeps flips symmetric.
    widths = SpatialPad(target, method="symmetric").compute_pad_width(tuple(shape))
    return tuple((int(before), int(after)) for before, after in widths[1:])  # drop the channel axis


class WholeImagePredictor:
    """Predict a whole image with sliding windows, optional flip TTA, a network ensemble and tiling.

    Networks are moved to `device` (default: the device of the first network's parameters, else CPU).
    Each must map (B, C_in, *roi_size) to (B, C_out, *roi_size) as one tensor.
    """

    def __init__(
        self,
        networks: nn.Module | Sequence[nn.Module],
        roi_size: Sequence[int] = (512, 512),
        overlap: float = 0.6,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        sw_batch_size: int = 4,
        stride_multiple: int = 32,
        tta: FlipTTA | None = None,
        tile_size: int | None = None,
        halo: int = 64,
        device: torch.device | str | None = None,
        progress: bool = True,
        amp: bool = False,
        amp_dtype: torch.dtype | str = torch.float16,
        output_activation: Callable[[Tensor], Tensor] | None = None,
    ):
        self.networks = [networks] if isinstance(networks, nn.Module) else list(networks)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap, self.mode, self.sigma_scale = overlap, mode, sigma_scale
        self.sw_batch_size, self.stride_multiple = sw_batch_size, stride_multiple
        self.flips = tta.flips if tta is not None else ((),)
        self.flip_inverse = tta.inverse if tta is not None else None
        self.tile_size, self.halo = tile_size, halo
        self.progress, self.amp, self.output_activation = progress, amp, output_activation
        self.amp_dtype = getattr(torch, amp_dtype) if isinstance(amp_dtype, str) else amp_dtype
        self._check_settings()
        self.device = torch.device(device) if device is not None else _module_device(self.networks[0])
        for network in self.networks:
            network.to(self.device)

    def _check_settings(self) -> None:
        """Reject settings that would fail later, deep inside MONAI or the network."""
        if not self.networks:
            raise ValueError("networks is empty")
        spatial_dims = len(self.roi_size)
        if spatial_dims not in (2, 3):
            raise ValueError(f"roi_size must have 2 or 3 entries, got {self.roi_size}")
        if self.stride_multiple < 1 or any(r % self.stride_multiple for r in self.roi_size):
            raise ValueError(f"roi_size {self.roi_size} must be a multiple of stride_multiple={self.stride_multiple}")
        if self.tile_size is not None and self.tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {self.tile_size}")
        if self.halo < 0:
            raise ValueError(f"halo must be >= 0, got {self.halo}")
        for dims in self.flips:
            if any(not -spatial_dims <= d <= -1 for d in dims):
                raise ValueError(f"flip dims must be spatial dims from the end (-1 .. -{spatial_dims}), got {dims}")

    def __call__(self, image: Tensor | np.ndarray) -> Tensor:
        """Predict (C, *spatial) -> (C_out, *spatial), or (B, C, *spatial) -> (B, C_out, *spatial); CPU float32."""
        spatial_dims = len(self.roi_size)
        if image.ndim not in (spatial_dims + 1, spatial_dims + 2) or 0 in image.shape:
            raise InputError(
                f"expected an image of shape (C, *spatial) or (B, C, *spatial) with {spatial_dims} spatial dims, "
                f"got {tuple(image.shape)}"
            )
        with _eval_mode(self.networks):
            if image.ndim == spatial_dims + 2:
                return torch.stack([self._predict_image(item) for item in image])
            return self._predict_image(image)

    def _predict_image(self, image: Tensor | np.ndarray) -> Tensor:
        """Predict one (C, *spatial) image tile by tile into a preallocated CPU output."""
        shape = tuple(image.shape[1:])
        tiles = self._tiles(shape)
        passes = len(tiles) * len(self.networks) * len(self.flips)
        logger.debug("predicting %s: %d tile(s) x %d network(s) x %d flip(s)", shape, len(tiles),
                     len(self.networks), len(self.flips))
        # One bar over passes; MONAI's per-window bar only when there is a single pass, to avoid nested bars.
        bar = tqdm(total=passes, desc="predict", unit="pass", disable=not self.progress or passes == 1)
        output: Tensor | None = None
        for tile in tiles:
            with torch.inference_mode():
                region = image[(slice(None), *tile.context)]
                prediction = self._predict_region(region, bar, window_progress=self.progress and passes == 1)
            if output is None:  # C_out is only known once a network has run
                output = torch.empty((prediction.shape[0], *shape), dtype=torch.float32)
            inside = tuple(slice(c.start - x.start, c.stop - x.start) for c, x in zip(tile.core, tile.context))
            output[(slice(None), *tile.core)] = prediction[(slice(None), *inside)]
        bar.close()
        return output

    def _tiles(self, shape: tuple[int, ...]) -> list[Tile]:
        """Halo tiles when tiling is on and the image is larger than a tile, else one tile for the whole image."""
        if self.tile_size is None or all(size <= self.tile_size for size in shape):
            whole = tuple(slice(0, size) for size in shape)
            return [Tile(whole, whole)]
        tiles = halo_tiles(shape, self.tile_size, self.halo)
        logger.info("image %s split into %d tiles of <= %d px with a %d px halo", shape, len(tiles),
                    self.tile_size, self.halo)
        return tiles

    def _predict_region(self, region: Tensor | np.ndarray, bar: tqdm, window_progress: bool) -> Tensor:
        """Pad one region, average all networks and flips over it, crop back; returns CPU float32 (C_out, *s)."""
        shape = tuple(region.shape[1:])
        widths = stride_padding(shape, self.roi_size, self.stride_multiple)
        # Pad on the CPU (MONAI's "symmetric" goes through np.pad) so only the padded region reaches the device.
        padded = pad_nd(_float_cpu(region), [(0, 0), *widths], mode=PAD_MODE).to(self.device)[None]
        inferer = SlidingWindowInferer(
            roi_size=self.roi_size, sw_batch_size=self.sw_batch_size, overlap=self.overlap, mode=self.mode,
            sigma_scale=self.sigma_scale, sw_device=self.device, device=self.device, progress=window_progress,
        )
        total: Tensor | None = None
        for network in self.networks:
            for dims in self.flips:
                prediction = self._predict_flipped(inferer, network, padded, dims)
                total = prediction if total is None else total + prediction
                bar.update()
        total /= len(self.networks) * len(self.flips)
        crop = tuple(slice(before, before + size) for (before, _), size in zip(widths, shape))
        return total[0][(slice(None), *crop)].cpu()

    def _predict_flipped(self, inferer: SlidingWindowInferer, network: nn.Module, x: Tensor,
                         dims: tuple[int, ...]) -> Tensor:
        """Run the inferer on `x` flipped along `dims`, then flip back and apply the TTA inverse."""
        if not dims:
            return inferer(x, self._window_function(network))
        prediction = torch.flip(inferer(torch.flip(x, dims), self._window_function(network)), dims)
        return self.flip_inverse(prediction, dims) if self.flip_inverse is not None else prediction

    def _window_function(self, network: nn.Module) -> Callable[[Tensor], Tensor]:
        """Wrap `network` for one batch of windows: autocast, float32 output, activation, shape check."""
        use_amp = self.amp and self.device.type == "cuda"

        def run(windows: Tensor) -> Tensor:
            with torch.autocast("cuda", dtype=self.amp_dtype) if use_amp else nullcontext():
                out = network(windows)
            if not isinstance(out, Tensor) or out.shape[2:] != windows.shape[2:]:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"network must return one tensor (B, C_out, *{tuple(windows.shape[2:])}), got {got}")
            out = out.float()
            # Activation per window, before blending, so ensembles and flips average probabilities.
            return self.output_activation(out) if self.output_activation is not None else out

        return run


class WholeImageInferer(Inferer):
    """WholeImagePredictor as a MONAI Inferer, so MONAI engines (SupervisedEvaluator) and bundle tools drive it.

    The engine's network is predicted with; an `nn.ModuleList` is an ensemble whose outputs are averaged.
    Keyword arguments are WholeImagePredictor's (roi_size, overlap, tta, tile_size, amp ...). The output
    is returned on the input's device, so post-processing runs where the network ran.
    """

    def __init__(self, **predictor_args):
        super().__init__()
        self.predictor_args = {"progress": False, **predictor_args}

    def __call__(self, inputs: Tensor, network: nn.Module, *args, **kwargs) -> Tensor:
        networks = list(network) if isinstance(network, nn.ModuleList) else network
        predictor = WholeImagePredictor(networks, device=inputs.device, **self.predictor_args)
        return predictor(inputs).to(inputs.device)


def _float_cpu(region: Tensor | np.ndarray) -> Tensor:
    """A float32 CPU tensor of `region`, converting only this region (not the whole image)."""
    if isinstance(region, Tensor):
        return region.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.asarray(region, dtype=np.float32))


def _module_device(network: nn.Module) -> torch.device:
    """Device of the first parameter or buffer of `network`, CPU when it has none."""
    for tensor in itertools.chain(network.parameters(), network.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def _eval_mode(networks: Sequence[nn.Module]) -> Iterator[None]:
    """Put networks in eval mode and restore their training flags afterwards (e.g. validation mid-training)."""
    was_training = [network.training for network in networks]
    for network in networks:
        network.eval()
    try:
        yield
    finally:
        for network, training in zip(networks, was_training):
            network.train(training)
