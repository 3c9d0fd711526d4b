"""Cellpose/MEDIAR post-processing: (flows, cell-probability logits) -> instance labels, in torch (CPU or GPU).

Steps, as in cellpose 3.1 ``dynamics.compute_masks`` with MEDIAR's settings:

1. foreground = logits > ``cellprob_threshold`` (0 = probability 0.5); holes and objects smaller than ``min_size``
   pixels are filled / removed (4-connected, as MEDIAR's skimage calls do);
2. every foreground pixel follows the flow field ``flows / flow_scale`` (zero off the foreground) for ``niter``
   Euler steps with bilinear interpolation (``grid_sample``), positions clamped to the image;
3. end points are binned into a histogram (padded by 20 px); seeds are local maxima of a 5x5 window holding more
   than 10 end points; each seed grows 5 times into 3x3 neighbours holding more than 2 end points (inside an 11x11
   window); where grown seeds overlap, the seed with more end points wins; each pixel takes the label of the bin its
   end point falls in;
4. masks covering more than ``max_size_fraction`` of the image are dropped;
5. masks whose flow error (sum over both components of the mean squared difference between ``flows / flow_scale``
   and ``labels_to_flows(mask)`` over the mask) exceeds ``flow_threshold`` are dropped;
6. labels are renumbered 1..n.

Images larger than ``tile_size`` on a side are processed in overlapping tiles; see ``flows_to_instances``.
The histogram seeding, seed growth and tile stitching are written here (no library provides them).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from cellzoo.targets.flows import labels_to_flows, torch_threads

__all__ = ["clean_foreground", "flow_errors", "flows_to_instances", "follow_flows"]

_HIST_PAD = 20  # cellpose pads the end-point histogram by 20 px
_SEED_MIN_COUNT = 10  # a seed bin holds more than this many end points
_GROW_MIN_COUNT = 2  # seeds grow into bins holding more than this many end points
_GROW_STEPS = 5


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Numpy copy-free view of an array or tensor."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def clean_foreground(fg: np.ndarray, min_size: int) -> np.ndarray:
    """Fill 4-connected holes and remove 4-connected objects smaller than `min_size` pixels (MEDIAR's cleanup).

    As skimage's remove_small_holes, any background component under `min_size` counts as a hole, also at the
    image border. Work is confined to the foreground's bounding box plus a 1-pixel ring; background touching the
    ring continues outside the box and is never filled.
    """
    if min_size <= 0 or not fg.any():
        return fg
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, fg.shape[0])
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, fg.shape[1])
    box = fg[y0:y1, x0:x1]
    holes, n = ndi.label(~box)
    if n:
        small = np.bincount(holes.ravel(), minlength=n + 1) < min_size
        ring = np.zeros(box.shape, bool)  # box edges that are not image edges
        ring[0, :], ring[-1, :], ring[:, 0], ring[:, -1] = y0 > 0, y1 < fg.shape[0], x0 > 0, x1 < fg.shape[1]
        small[holes[ring]] = False
        small[0] = False
        if small.any():
            box = box | small[holes]
    objects, n = ndi.label(box)
    if n:
        keep = np.bincount(objects.ravel(), minlength=n + 1) >= min_size
        keep[0] = False
        if not keep[1:].all():
            box = keep[objects]
    out = np.zeros_like(fg)
    out[y0:y1, x0:x1] = box
    return out


def _pow2_plus_one(n: int) -> int:
    """Smallest 2^k + 1 >= n."""
    return (1 << max(n - 2, 0).bit_length()) + 1


def follow_flows(
    flows: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, niter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """End points (y, x) after `niter` Euler steps of the pixels (ys, xs) along `flows` (2, H, W) in px/step.

    Bilinear interpolation with positions clamped to [0, size - 1], matching cellpose's CPU interpolation.
    """
    h, w = flows.shape[1:]
    # grid_sample works in [-1, 1] (align_corners=True: pixel i at i * 2 / (size - 1) - 1). Padding the field
    # with zeros to 2^k + 1 pixels makes that scale a power of two, so positions and whole-pixel steps stay
    # exact in float32 as in cellpose's pixel units (the end points are truncated to histogram bins); padded
    # pixels are never reached because positions are clamped to the real image.
    hp, wp = _pow2_plus_one(h), _pow2_plus_one(w)
    sy, sx = 2.0 / (hp - 1), 2.0 / (wp - 1)
    field = torch.zeros(1, 2, hp, wp, device=flows.device)
    field[0, 0, :h, :w] = flows[1] * sx
    field[0, 1, :h, :w] = flows[0] * sy
    n = len(ys)
    width = 1024  # a (rows, 1024) grid lets grid_sample's CPU kernel vectorise along rows
    rows = -(-n // width)
    pos = torch.zeros(2, rows * width, device=flows.device)
    pos[0, :n] = xs.float() * sx - 1
    pos[1, :n] = ys.float() * sy - 1
    pos = pos.view(1, 2, rows, width)
    grid = pos.permute(0, 2, 3, 1)  # (1, rows, width, 2) view: positions stay planar, so the add is contiguous
    px, py = pos[:, 0], pos[:, 1]
    top_x, top_y = (w - 1) * sx - 1, (h - 1) * sy - 1
    for _ in range(niter):
        pos += F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)
        px.clamp_(-1.0, top_x)
        py.clamp_(-1.0, top_y)
    pos = pos.view(2, -1)[:, :n]
    return (pos[1] + 1) / sy, (pos[0] + 1) / sx


def _seed_labels(hist: torch.Tensor) -> torch.Tensor:
    """Label of every histogram bin: grown seeds numbered by ascending count, 0 where no seed reached."""
    wy, wx = hist.shape
    flat_hist = hist.view(-1)
    labels = torch.zeros(hist.numel(), dtype=torch.int64, device=hist.device)
    # local maxima of a 5x5 window, tested only at the few bins that could be seeds (cellpose max-pools it all)
    cand = torch.nonzero(flat_hist > _SEED_MIN_COUNT).flatten()
    if len(cand) == 0:
        return labels.view(wy, wx)
    d = torch.arange(-2, 3, device=hist.device)
    window5 = (d[:, None] * wx + d[None, :]).view(-1)
    peak = flat_hist[cand[:, None] + window5[None, :]].amax(1)
    seeds = cand[flat_hist[cand] >= peak]
    # ascending count: later seeds win where grown seeds overlap, as in cellpose (ties: raster order)
    seeds = seeds[torch.argsort(flat_hist[seeds], stable=True)]
    d = torch.arange(-5, 6, device=hist.device)
    window11 = (d[:, None] * wx + d[None, :])
    flat = seeds[:, None, None] + window11[None]  # seeds sit >= 20 px inside the padded histogram
    allowed = flat_hist[flat] > _GROW_MIN_COUNT
    grown = torch.zeros(len(seeds), 1, 11, 11, device=hist.device)
    grown[:, 0, 5, 5] = 1
    for _ in range(_GROW_STEPS):
        grown = F.max_pool2d(grown, 3, stride=1, padding=1) * allowed[:, None]
    rank = torch.arange(1, len(seeds) + 1, device=hist.device)[:, None, None].expand(-1, 11, 11)
    hit = grown[:, 0] > 0
    labels.scatter_reduce_(0, flat[hit], rank[hit], reduce="amax")
    return labels.view(wy, wx)


def _cluster(end_y: torch.Tensor, end_x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Label of each end point: histogram seeds grown as in cellpose's get_masks_torch."""
    h, w = shape
    r = _HIST_PAD
    iy = end_y.to(torch.int64).clamp(0, h - 1)  # truncation, as cellpose's cast to int
    ix = end_x.to(torch.int64).clamp(0, w - 1)
    # the histogram only needs to cover the end points (plus cellpose's padding, which keeps seed windows inside)
    iy = iy - iy.min() + r
    ix = ix - ix.min() + r
    wy, wx = int(iy.max()) + r + 1, int(ix.max()) + r + 1
    flat = iy * wx + ix
    hist = torch.bincount(flat, minlength=wy * wx).view(wy, wx)
    return _seed_labels(hist).view(-1)[flat]


def _relabel(ids: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Per-pixel ids with the ids flagged in `drop` (indexed by id) and absent ids set to 0, the rest renumbered
    1..n in id order."""
    keep = ~drop & (np.bincount(ids, minlength=len(drop)) > 0)
    keep[0] = False
    lut = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    return lut[ids]


def flow_errors(labels: np.ndarray, flows: np.ndarray, device: str | torch.device | None = None) -> np.ndarray:
    """Per label 1..max: sum over both components of the mean squared difference between `flows` (unit scale)
    and the flows recomputed from the label's mask (cellpose's metrics.flow_error)."""
    ys, xs = np.nonzero(labels)
    return _flow_errors_at(labels, ys, xs, labels[ys, xs], flows, device)


def _flow_errors_at(
    labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, ids: np.ndarray, flows: np.ndarray,
    device: str | torch.device | None,
) -> np.ndarray:
    """flow_errors, given the labelled pixels (ys, xs) and their ids."""
    n = int(ids.max()) if len(ids) else 0
    if n == 0:
        return np.zeros(0)
    mask_flows = labels_to_flows(labels, device=device, num_threads=None)
    sq = ((mask_flows[:, ys, xs] - flows[:, ys, xs]) ** 2).sum(0, dtype=np.float64)
    count = np.bincount(ids, minlength=n + 1)[1:]
    total = np.bincount(ids, weights=sq, minlength=n + 1)[1:]
    return np.divide(total, count, out=np.zeros(n), where=count > 0)


def _instances(
    flows: np.ndarray,
    fg: np.ndarray,
    niter: int,
    flow_threshold: float | None,
    max_size: float,
    device: torch.device,
) -> np.ndarray:
    """Steps 2-6 on one image (or tile): unit-scale `flows` and a cleaned foreground -> int32 labels."""
    out = np.zeros(fg.shape, np.int32)
    ys, xs = np.nonzero(fg)
    if len(ys) == 0:
        return out
    # the field is 0 off the foreground, so a point leaves it by at most one step plus one pixel of bilinear
    # reach: the walk runs on the foreground's box plus that margin, and clamping at the box only happens where
    # the box is cut at the image edge, exactly as cellpose clamps at the image
    m = int(np.ceil(np.abs(flows[:, ys, xs]).max())) + 3
    y0, y1 = max(int(ys.min()) - m, 0), min(int(ys.max()) + m + 1, fg.shape[0])
    x0, x1 = max(int(xs.min()) - m, 0), min(int(xs.max()) + m + 1, fg.shape[1])
    field = torch.from_numpy(flows[:, y0:y1, x0:x1] * fg[y0:y1, x0:x1]).to(device)
    end_y, end_x = follow_flows(
        field, torch.from_numpy(ys - y0).to(device), torch.from_numpy(xs - x0).to(device), niter
    )
    ids = _cluster(end_y, end_x, (y1 - y0, x1 - x0)).cpu().numpy()
    ids = _relabel(ids, np.bincount(ids) > max_size)
    if flow_threshold is not None and flow_threshold > 0 and ids.max() > 0:
        out[ys, xs] = ids
        bad = _flow_errors_at(out, ys, xs, ids, flows, device) > flow_threshold
        ids = _relabel(ids, np.concatenate([[False], bad]))
    out[ys, xs] = ids
    return out


def _windows(size: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, end, core start, core end) of overlapping windows along one axis; the cores partition the axis."""
    if size <= tile:
        return [(0, size, 0, size)]
    step = max(tile - overlap, 1)
    starts = list(range(0, size - tile, step)) + [size - tile]
    bounds = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [size]
    return [(s, s + tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _stitch_tiles(
    flows: np.ndarray, fg: np.ndarray, tile: int, overlap: int, niter: int, flow_threshold: float | None,
    device: torch.device,
) -> np.ndarray:
    """Tiled steps 2-5: each tile keeps the masks whose centroid lies in its core, pasted with fresh ids."""
    out = np.zeros(fg.shape, np.int32)
    next_id = 1
    for y0, y1, cy0, cy1 in _windows(fg.shape[0], tile, overlap):
        for x0, x1, cx0, cx1 in _windows(fg.shape[1], tile, overlap):
            lab = _instances(flows[:, y0:y1, x0:x1], fg[y0:y1, x0:x1], niter, flow_threshold, np.inf, device)
            n = int(lab.max())
            if n == 0:
                continue
            ys, xs = np.nonzero(lab)
            ids = lab[ys, xs]
            count = np.bincount(ids, minlength=n + 1)
            cy = np.bincount(ids, ys, minlength=n + 1) / np.maximum(count, 1) + y0
            cx = np.bincount(ids, xs, minlength=n + 1) / np.maximum(count, 1) + x0
            keep = (count > 0) & (cy >= cy0) & (cy < cy1) & (cx >= cx0) & (cx < cx1)
            new = np.where(keep, np.cumsum(keep) - 1 + next_id, 0)
            sel = keep[ids] & (out[ys + y0, xs + x0] == 0)  # pixels claimed by an earlier tile stay there
            out[ys[sel] + y0, xs[sel] + x0] = new[ids[sel]]
            next_id += int(keep.sum())
    return out


# MEDIAR splits images above 25 megapixels into 2000 x 2000 tiles for post-processing.
LARGE_IMAGE_PIXELS = 25_000_000
POSTPROCESS_TILE = 2000


def large_image_tile(shape) -> int | None:
    """The post-processing tile size for an image of (H, W) `shape`: None (whole image) up to 25 MP."""
    height, width = (int(v) for v in shape[-2:])
    return POSTPROCESS_TILE if height * width > LARGE_IMAGE_PIXELS else None


def flows_to_instances(
    flows: np.ndarray | torch.Tensor,
    cellprob_logits: np.ndarray | torch.Tensor,
    cellprob_threshold: float = 0.0,
    flow_threshold: float | None = 0.4,
    niter: int = 200,
    min_size: int = 16,
    max_size_fraction: float = 0.9,
    tile_size: int | None = None,
    device: str | torch.device | None = None,
    flow_scale: float = 5.0,
    tile_overlap: int = 64,
    num_threads: int | None = 1,
) -> np.ndarray:
    """(H, W) int32 instance labels from network flows (2, H, W) = (flow_y, flow_x) and cell-probability logits.

    `flows` are divided by `flow_scale` first (5: MEDIAR and Cellpose networks output 5 x unit flows; pass 1 for
    unit flows such as ``labels_to_flows`` output). `cellprob_threshold` is a logit (0 = probability 0.5).
    `flow_threshold` <= 0 or None skips the flow-error check. With `tile_size` set and the image larger than it on a
    side, steps 2-5 run on tiles overlapping by `tile_overlap` px (MEDIAR used 2000 px tiles for images over 25 MP);
    the tile cores (split at the middle of each overlap) partition the image, every tile keeps only the masks
    whose centroid lies in its core, kept masks get fresh ids, and pixels already claimed by a mask of an earlier
    tile stay with it. The overlap should exceed the largest cell diameter. `num_threads` caps torch's CPU threads
    during the call (None: leave as is).
    """
    fl = _to_numpy(flows).astype(np.float32)
    logits = _to_numpy(cellprob_logits)
    if logits.ndim == 3 and logits.shape[0] == 1:
        logits = logits[0]
    if fl.ndim != 3 or fl.shape[0] != 2 or fl.shape[1:] != logits.shape:
        raise ValueError(f"flows must be (2, H, W) and logits (H, W); got {fl.shape} and {logits.shape}")
    if tile_size is not None and not 0 <= tile_overlap < tile_size:
        raise ValueError(f"tile_overlap must be in [0, tile_size), got {tile_overlap} for tile_size {tile_size}")
    fl = fl / np.float32(flow_scale)
    fg = clean_foreground(logits > cellprob_threshold, min_size)
    dev = torch.device(device or "cpu")
    max_size = max_size_fraction * fg.size
    with torch_threads(num_threads if dev.type == "cpu" else None):
        if tile_size is None or max(fg.shape) <= tile_size:
            return _instances(fl, fg, niter, flow_threshold, max_size, dev)
        out = _stitch_tiles(fl, fg, tile_size, tile_overlap, niter, flow_threshold, dev)
    ys, xs = np.nonzero(out)
    ids = out[ys, xs]
    out[ys, xs] = _relabel(ids, np.bincount(ids) > max_size)
    return out
