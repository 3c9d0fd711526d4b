"""Momentum contrast (MoCo v2) as a reusable component: encoder wrapper, projection head, momentum key encoder,
queue of negatives, InfoNCE with temperature, two augmented views per image, and the MONAI trainer glue.

After He et al., *Momentum Contrast for Unsupervised Visual Representation Learning* (CVPR 2020) and Chen
et al., *Improved Baselines with Momentum Contrastive Learning* (MoCo v2: MLP projection head, temperature
0.2, stronger augmentation). Written here because neither MONAI, timm nor torchvision provides MoCo.

Any backbone works: `PooledEncoder` turns a module that returns a feature map (or a list/dict of them, as
timm `features_only` models and FPNs do) into one vector per image. The query encoder holds the caller's
module itself, so training MoCo trains that module in place (CUPre trains a detector's backbone this way);
the key encoder is a copy that follows it by momentum and never receives gradients.

In a MONAI `SupervisedTrainer`: `TwoViewsd` makes two views of each image, `PrepareTwoViews` feeds them to
the network as `moco(view_q, view_k)`, which returns the InfoNCE logits (positive first), and
`InfoNCELoss` is the loss function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_tensor
from torch import Tensor, nn

__all__ = ["InfoNCELoss", "MoCo", "PooledEncoder", "PrepareTwoViews", "ProjectionHead", "TwoViewsd",
           "info_nce_logits", "moco_view_transforms"]


class PooledEncoder(nn.Module):
    """`module(x)` reduced to (B, D): the last map of a list/tuple/dict output, global average pooled."""

    def __init__(self, module: nn.Module, index: int | str = -1):
        super().__init__()
        self.module, self.index = module, index

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if isinstance(out, Mapping):
            out = out[self.index] if not isinstance(self.index, int) else list(out.values())[self.index]
        elif isinstance(out, (list, tuple)):
            out = out[self.index]
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1) if out.ndim == 4 else out


class ProjectionHead(nn.Sequential):
    """MoCo v2's MLP head: Linear -> ReLU -> Linear (feature -> hidden -> out)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


def info_nce_logits(q: Tensor, k: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """(B, 1 + K) logits: the positive pair q.k in column 0, then q against each of the K negatives, / temperature.

    `q`, `k` are (B, D) and `negatives` (D, K), all L2-normalised; cross-entropy against class 0 is InfoNCE.
    """
    positive = torch.einsum("bd,bd->b", q, k)[:, None]
    negative = q @ negatives
    return torch.cat([positive, negative], dim=1) / temperature


class InfoNCELoss(nn.Module):
    """Cross-entropy of InfoNCE logits (positive in column 0); the target a trainer passes is not used."""

    def forward(self, logits: Tensor, target: object = None) -> Tensor:
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def _gather(x: Tensor) -> Tensor:
    """`x` from every process of a distributed run, concatenated (no gradient); `x` itself otherwise."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class MoCo(nn.Module):
    """MoCo v2: query encoder (`encoder` + projection head), momentum key encoder, a queue of negative keys.

    `forward(view_q, view_k)` returns InfoNCE logits (B, 1 + queue_size): it encodes the queries, updates
    the key encoder by momentum, encodes the keys without gradient, then enqueues them (gathered from every
    process in a distributed run). `encoder` maps images to (B, feature_dim), e.g. a `PooledEncoder`.

    MoCo's shuffled BatchNorm (which stops keys from leaking batch statistics to queries) is left out: it
    needs several GPUs, and backbones with GroupNorm, as CUPre's, have no batch statistics to leak.
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, dim: int = 128, hidden_dim: int = 2048,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2):
        super().__init__()
        if not 0.0 <= momentum <= 1.0 or temperature <= 0 or queue_size < 1:
            raise ValueError(f"need 0 <= momentum <= 1, temperature > 0, queue_size >= 1; got {momentum}, "
                             f"{temperature}, {queue_size}")
        self.momentum, self.temperature = float(momentum), float(temperature)
        self.encoder_q = nn.Sequential(encoder, ProjectionHead(feature_dim, hidden_dim, dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def sync_key_encoder(self) -> None:
        """Copy the query encoder into the key encoder (e.g. after the query encoder was trained elsewhere)."""
        for q, k in zip(self.encoder_q.state_dict().values(), self.encoder_k.state_dict().values()):
            k.copy_(q)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            k.mul_(self.momentum).add_(q.detach(), alpha=1.0 - self.momentum)
        for q, k in zip(self.encoder_q.buffers(), self.encoder_k.buffers()):
            k.copy_(q)  # normalisation statistics follow the query encoder

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Replace the oldest queue entries by `keys` (a ring buffer; wraps around its end)."""
        keys = _gather(keys)
        size = self.queue.shape[1]
        keys = keys[-size:]
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[:, index] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def forward(self, view_q: Tensor, view_k: Tensor) -> Tensor:
        q = F.normalize(self.encoder_q(view_q), dim=1)
        with torch.no_grad():
            self._momentum_update()
            k = F.normalize(self.encoder_k(view_k), dim=1)
        logits = info_nce_logits(q, k, self.queue.clone().detach(), self.temperature)
        if self.training:
            self._enqueue(k)
        return logits


class TwoViewsd(MapTransform, Randomizable):
    """Two independent draws of a random `transform` of `keys`, stored as `<key><suffix>` for both suffixes.

    Randomizable, so a CacheDataset stops caching here (the views must differ in every epoch); seeding it
    seeds `transform`.
    """

    def __init__(self, keys: KeysCollection, transform: Callable, suffixes: Sequence[str] = ("_q", "_k"),
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform, self.suffixes = transform, tuple(suffixes)

    def set_random_state(self, seed: int | None = None, state=None) -> TwoViewsd:
        super().set_random_state(seed, state)
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        """The randomness is the wrapped transform's own."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            for suffix in self.suffixes:
                d[f"{key}{suffix}"] = self.transform({key: d[key]})[key]
        return d


def moco_view_transforms(keys: KeysCollection = "image", view_size: int = 224, context_size: int | None = None,
                         min_scale: float = 0.2, jitter: float = 0.4, blur_prob: float = 0.5) -> Callable:
    """MoCo v2's augmentation for channel-first microscopy: random resized crop, flips and 90-degree turns,
    intensity jitter (brightness/contrast, the grey-level version of colour jitter) and Gaussian blur.

    `context_size` first cuts a window at native resolution (large fields would otherwise be shrunk to
    `view_size` and lose their cells); the resized crop then covers `min_scale`..1 of that window's area.
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandFlipd,
        RandGaussianSmoothd,
        RandRotate90d,
        RandScaleCropd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        Resized,
        SpatialPadd,
    )

    context = context_size or view_size
    side = float(min_scale) ** 0.5  # area fraction -> side fraction
    return Compose([
        SpatialPadd(keys, (context, context)),
        RandSpatialCropd(keys, (context, context), random_size=False),
        RandScaleCropd(keys, roi_scale=side, max_roi_scale=1.0, random_size=True),
        Resized(keys, (view_size, view_size), mode="bilinear"),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys, prob=0.5, max_k=3),
        RandScaleIntensityd(keys, factors=jitter, prob=0.8),
        RandShiftIntensityd(keys, offsets=jitter / 4, prob=0.8),
        RandAdjustContrastd(keys, gamma=(1 - jitter / 2, 1 + jitter), prob=0.8),
        RandGaussianSmoothd(keys, sigma_x=(0.1, 2.0), sigma_y=(0.1, 2.0), prob=blur_prob),
    ])


class PrepareTwoViews:
    """`prepare_batch` for a MONAI trainer of `MoCo`: the network is called as `moco(view_q, view_k)`."""

    def __init__(self, query_key: str = "image_q", key_key: str = "image_k"):
        self.query_key, self.key_key = query_key, key_key

    def __call__(self, batch: dict, device=None, non_blocking: bool = False, **kwargs):
        """(view_q, None, (view_k,), {}) on `device`: MONAI's 4-tuple form passes view_k to the network.

        Plain tensors, not MONAI's MetaTensors (which torch.as_tensor would keep): MoCo needs no metadata,
        and the keys gathered from several processes carry the metadata of one batch each, which MONAI
        then refuses to slice for the queue."""
        view_q = convert_to_tensor(batch[self.query_key], track_meta=False).to(device=device, non_blocking=non_blocking)
        view_k = convert_to_tensor(batch[self.key_key], track_meta=False).to(device=device, non_blocking=non_blocking)
        return view_q, None, (view_k,), {}
