"""Cellpose-style flow targets: labels -> unit vectors pointing along heat diffused from each cell's centre.

Definition (that of cellpose 3.1 ``dynamics.masks_to_flows`` on the CPU, which MEDIAR reuses):

* centre of a cell: the cell pixel closest to the mean of its pixel coordinates (first in raster order on ties);
* heat: starting from zero, for ``niter = 2 * (h + w + 4)`` iterations (h, w = the cell's bounding box) add 1 at the
  centre, then replace every cell pixel by the mean of its 3x3 neighbourhood, counting pixels outside the cell as 0
  (so heat never crosses into a touching cell);
* flow: the central differences (T[y+1, x] - T[y-1, x], T[y, x+1] - T[y, x-1]) scaled to unit length; zero outside
  cells and wherever the gradient vanishes (1-pixel cells, pieces of a label that the heat cannot reach).

MEDIAR's copy of this code uses log(1 + T), the median centre and one iteration count for all cells; cellpose 3.1
uses T, the mean centre and a count per cell, which is what this module reproduces (docs/benchmarks.md).

Implementation (written here; no library provides it). All cells are diffused together in a few flat float32
buffers whose rows have one common width ``p``, so a 3x3 box sum is four contiguous adds (+-1 along a row, then
+-p across rows) and one multiply by the cell mask over the whole buffer:

* compact cells are stored whole: the bounding box plus a 1-pixel zero border, turned so the narrow side runs along
  the row, stacked on top of each other ("strips");
* sparse cells (long, thin or branched, where the box is mostly empty) are cut into 16x16 tiles with a 1-pixel
  halo; only tiles touching the cell are kept, and halos are refreshed from neighbouring tiles by one gather and
  one scatter per step.

Cells are sorted by iteration count, so the cells still running always form a prefix of a buffer; buffers are cut to
a cache-friendly size. Heat is float32 with each cell's source scaled to just below float32's range. Long, thin cells
(heat at the tips of CTC MSC cells is 10^-86 of the centre's) always go to tiles, and every tile carries its own
power-of-two exponent (block floating point), so their heat stays representable. Gradients are taken from the heat
converted back to cellpose's unscaled float64 values, so cellpose's 1e-60 normalisation epsilon shortens the same
far-tip vectors. A cell whose heat still rounds to 0 next to heated pixels is rerun in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage as ndi

__all__ = ["LabelsToFlowsd", "labels_to_flows", "torch_threads"]

# Largest heat allowed per cell: a float32 sum of 9 such values stays below float32's maximum (3.4e38).
_F32_HEAT_CEILING = 3.0e37
# Pixels per buffer: its working arrays (heat, two partial sums, mask) then stay within a few MB of cache.
_CHUNK_PIXELS = 160_000
# Padding pixels per step worth one extra buffer (a buffer costs ~6 tensor calls per step, ~1 ns per pixel).
_MERGE_PIXELS = 6_000
# Length^2 / area above which a cell is "long and thin" (heat may fall below float32's range at its tips).
_THIN_ASPECT = 40
# Fill ratio (cell pixels / box pixels) below which tiling a cell is considered.
_SPARSE_FILL = 0.45


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's CPU thread count (None: leave it). The loops here run many small tensor ops; on a
    busy 2-core machine two OpenMP threads waiting on each other made them 30x slower than one thread."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class _Cell:
    """One cell: its mask cut from the label image (turned when `swap`) and where it came from."""

    mask: np.ndarray  # (h, w) bool, in buffer orientation
    y0: int  # image row of the bounding box's first row
    x0: int  # image column of its first column
    niter: int  # diffusion steps (from the unturned box)
    swap: bool  # mask is the transpose of the image crop
    n_tiles: int = 0  # tiles touching the cell, once it has been found sparse


@dataclass
class _Buffer:
    """Flat layout of a group of cells sorted by descending niter, ready for the diffusion loop."""

    width: int  # row length p
    mask9: np.ndarray  # (rows * p,) float32: 1/9 on cell pixels, 0 elsewhere
    unit_rows_end: np.ndarray  # row where each unit (strip cell or tile) ends, ascending
    unit_niter: np.ndarray  # niter of each unit's cell, descending
    cell_niter: np.ndarray  # niter of each cell, descending
    source_index: np.ndarray  # flat index of each cell's centre
    halo_src: np.ndarray  # flat index each halo pixel copies from (tiles only), sorted by destination
    halo_dst: np.ndarray  # flat index of each halo pixel
    pix_index: np.ndarray  # flat index of every cell pixel
    pix_y: np.ndarray  # its image row
    pix_x: np.ndarray  # its image column
    pix_swap: np.ndarray  # bool: its cell is stored turned
    pix_cell: np.ndarray  # index (into the buffer's cells) of its cell
    cells: list[_Cell]  # the cells, descending niter
    tiled: bool = False  # units are tiles with halos (else whole cells as strips)


def _as_2d_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W) integer array from a (H, W) or (1, H, W) array/tensor."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"labels must be (H, W) or (1, H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError("labels must hold integer ids")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError("labels must be non-negative")
    return arr


def _compact_ids(labels: np.ndarray) -> np.ndarray:
    """Labels whose ids are small enough for find_objects (renumbered only when the ids are huge)."""
    if labels.max() <= 4 * labels.size + 1024:
        return labels
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


def _cut_cells(labels: np.ndarray) -> list[_Cell]:
    """Every cell's mask, turned so its narrow side runs along the row, sorted by descending niter."""
    cells = []
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        mask = labels[sl] == i + 1
        h, w = mask.shape
        niter = 2 * (h + w + 4)  # cellpose: 2 * (ly + lx) of the box padded by one pixel
        swap = w > h
        cells.append(_Cell(mask.T if swap else mask, sl[0].start, sl[1].start, niter, swap))
    cells.sort(key=lambda c: -c.niter)
    return cells


def _tiles_of(mask: np.ndarray, ts: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(indices of the ts x ts tiles touching the cell, their masks, tile rows, tile columns)."""
    h, w = mask.shape
    ny, nx = -(-h // ts), -(-w // ts)
    padded = np.zeros((ny * ts, nx * ts), bool)
    padded[:h, :w] = mask
    tiles = padded.reshape(ny, ts, nx, ts).swapaxes(1, 2).reshape(ny * nx, ts, ts)
    keep = np.flatnonzero(tiles.reshape(ny * nx, -1).any(1))
    return keep, tiles[keep], ny, nx


def _wants_tiles(cell: _Cell, ts: int) -> bool:
    """True for long, thin cells (their heat may span more than float32's range) and for cells whose tiles
    touch fewer pixels than their whole box."""
    h, w = cell.mask.shape
    n_px = int(cell.mask.sum())
    box = (h + 2) * (w + 2)
    if max(h, w) ** 2 > _THIN_ASPECT * n_px:
        return True
    if n_px >= _SPARSE_FILL * box or min(h, w) < 2 * ts:
        return False
    cell.n_tiles = len(_tiles_of(cell.mask, ts)[0])
    return cell.n_tiles * (ts + 2) ** 2 * 1.3 < box  # 1.3: halo traffic


def _group(
    cells: list[_Cell], width_of: Callable[[_Cell], int], rows_of: Callable[[_Cell], int]
) -> list[list[_Cell]]:
    """Consecutive groups sharing a buffer: a cell joins the current buffer unless that makes it too big or
    wastes more pixels per step than a separate buffer's per-step call overhead is worth."""
    groups: list[list[_Cell]] = []
    cur: list[_Cell] = []
    width = rows = used = 0
    for cell in cells:
        w, r = width_of(cell), rows_of(cell)
        new_width = max(width, w)
        extra = rows * (new_width - width) + r * (new_width - w)  # padding pixels this choice adds per step
        too_big = (rows + r) * new_width > _CHUNK_PIXELS
        wasteful = extra > _MERGE_PIXELS and (rows + r) * new_width > 1.25 * (used + r * w)
        if cur and (too_big or wasteful):
            groups.append(cur)
            cur, width, rows, used = [], 0, 0, 0
            new_width = w
        cur.append(cell)
        width, rows, used = new_width, rows + r, used + r * w
    if cur:
        groups.append(cur)
    return groups


def _pixel_table(mask2d: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat index, row, column) of every cell pixel of a buffer mask, in buffer raster order."""
    r, c = np.nonzero(mask2d)
    return r * p + c, r, c


def _strip_buffer(cells: list[_Cell]) -> tuple[_Buffer, np.ndarray, np.ndarray, np.ndarray]:
    """Buffer of whole cells stacked as strips; also each pixel's (cell, local row, local col) in crop coords +1."""
    p = max(c.mask.shape[1] for c in cells) + 2
    heights = np.array([c.mask.shape[0] + 2 for c in cells])
    ends = np.cumsum(heights)
    mask2d = np.zeros((ends[-1], p), bool)
    for cell, end in zip(cells, ends):
        h, w = cell.mask.shape
        mask2d[end - h - 1 : end - 1, 1 : w + 1] = cell.mask
    flat, r, c = _pixel_table(mask2d, p)
    cell_of = np.searchsorted(ends, r, side="right")
    # local coordinates inside the crop plus its 1-pixel border (cellpose's convention), buffer orientation
    lr = r - (ends - heights)[cell_of]
    return _empty_buffer(p, mask2d, flat, ends, cells), cell_of, lr, c


def _tile_buffer(cells: list[_Cell], ts: int) -> tuple[_Buffer, np.ndarray, np.ndarray, np.ndarray]:
    """Buffer of 16x16-style tiles with halos; also each pixel's (cell, local row, local col) in crop coords +1."""
    p = ts + 2
    masks, tile_cell, tile_ky, tile_kx, grids, grid_info = [], [], [], [], [], []
    n_tiles = grid_offset = 0
    for ci, cell in enumerate(cells):
        keep, tmask, ny, nx = _tiles_of(cell.mask, ts)
        grid = np.full((ny + 2, nx + 2), -1, np.int64)  # ring of -1: absent neighbours
        grid[1:-1, 1:-1].flat[keep] = n_tiles + np.arange(len(keep))
        ky, kx = np.divmod(keep, nx)
        masks.append(tmask)
        tile_cell.append(np.full(len(keep), ci))
        tile_ky.append(ky)
        tile_kx.append(kx)
        grid_info.append(np.stack([np.full_like(ky, grid_offset), np.full_like(ky, nx + 2)], 1))
        grids.append(grid.ravel())
        grid_offset += grid.size
        n_tiles += len(keep)
    tmasks = np.concatenate(masks)
    ky, kx, info = np.concatenate(tile_ky), np.concatenate(tile_kx), np.concatenate(grid_info)
    mask2d = np.zeros((n_tiles, p, p), bool)
    mask2d[:, 1:-1, 1:-1] = tmasks
    mask2d = mask2d.reshape(n_tiles * p, p)
    ends = (np.arange(n_tiles) + 1) * p
    buf = _empty_buffer(p, mask2d, None, ends, cells, np.concatenate(tile_cell))
    buf.tiled = True
    buf.halo_src, buf.halo_dst = _halo_indices(np.concatenate(grids), ky, kx, info, ts)
    flat, r, c = _pixel_table(mask2d, p)
    tile = r // p
    cell_of = np.concatenate(tile_cell)[tile]
    lr = ky[tile] * ts + r % p  # interior rows 1..ts of tile ky sit at crop rows ky*ts + 1..ts (+1 border)
    lc = kx[tile] * ts + c
    buf.pix_index = flat
    return buf, cell_of, lr, lc


def _halo_indices(
    grid: np.ndarray, ky: np.ndarray, kx: np.ndarray, info: np.ndarray, ts: int
) -> tuple[np.ndarray, np.ndarray]:
    """(source, destination) flat indices refreshing every halo pixel that has a neighbouring tile."""
    p = ts + 2
    ii, jj = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    ring = (ii == 0) | (ii == p - 1) | (jj == 0) | (jj == p - 1)
    hi, hj = ii[ring], jj[ring]
    dy = np.where(hi == 0, -1, np.where(hi == p - 1, 1, 0))
    dx = np.where(hj == 0, -1, np.where(hj == p - 1, 1, 0))
    gy, gx = ky[:, None] + 1 + dy[None], kx[:, None] + 1 + dx[None]
    neighbour = grid[info[:, :1] + gy * info[:, 1:2] + gx]
    # a halo pixel copies the pixel ts rows/cols back inside the neighbour tile; halos without a neighbour stay
    # 0, which removes all halo traffic for cells that fit in one tile
    src = neighbour * p * p + ((hi - dy * ts) * p + hj - dx * ts)[None]
    dst = np.arange(len(ky))[:, None] * p * p + (hi * p + hj)[None]
    has = neighbour >= 0
    return src[has], dst[has]


def _empty_buffer(
    p: int,
    mask2d: np.ndarray,
    flat: np.ndarray | None,
    ends: np.ndarray,
    cells: list[_Cell],
    unit_cell: np.ndarray | None = None,
) -> _Buffer:
    """Buffer with the layout fields filled; centres, halos and pixel tables are added by the caller."""
    cell_niter = np.array([c.niter for c in cells], np.int64)
    unit_niter = cell_niter if unit_cell is None else cell_niter[unit_cell]
    mask9 = mask2d.ravel().astype(np.float32) / 9.0
    empty = np.zeros(0, np.int64)
    flat = flat if flat is not None else empty
    return _Buffer(p, mask9, ends, unit_niter, cell_niter, empty, empty, empty, flat, empty, empty,
                   np.zeros(0, bool), empty, cells)


def _place_pixels(buf: _Buffer, cells: list[_Cell], cell_of: np.ndarray, lr: np.ndarray, lc: np.ndarray) -> None:
    """Fill the buffer's centres and image coordinates from each pixel's cell and crop coordinates (+1)."""
    swap = np.array([c.swap for c in cells])[cell_of]
    # crop coordinates in image orientation: cellpose's centre rule and raster order are defined there
    y = np.where(swap, lc, lr).astype(np.int64)
    x = np.where(swap, lr, lc).astype(np.int64)
    buf.pix_y = np.array([c.y0 for c in cells])[cell_of] + y - 1
    buf.pix_x = np.array([c.x0 for c in cells])[cell_of] + x - 1
    buf.pix_swap = swap
    buf.pix_cell = cell_of
    buf.cells = cells
    buf.source_index = buf.pix_index[_centres(cell_of, y, x, len(cells))]


def _centres(cell_of: np.ndarray, y: np.ndarray, x: np.ndarray, n_cells: int) -> np.ndarray:
    """Index (into the pixel table) of each cell's centre: closest to the mean, then first in raster order."""
    # both layouts list a cell's pixels contiguously (strips by rows, tiles by tile), so cell_of is sorted
    starts = np.searchsorted(cell_of, np.arange(n_cells))
    count = np.diff(np.append(starts, len(cell_of)))
    # integer sums divided once give the same float64 means as numpy's mean in cellpose, so ties match exactly
    my = np.add.reduceat(y, starts) / count
    mx = np.add.reduceat(x, starts) / count
    d2 = (x - mx[cell_of]) ** 2 + (y - my[cell_of]) ** 2
    best = np.minimum.reduceat(d2, starts)
    key = np.where(d2 == best[cell_of], y * (1 << 32) + x, np.iinfo(np.int64).max)
    first = np.minimum.reduceat(key, starts)
    hit = np.flatnonzero(key == first[cell_of])
    return hit  # one per cell, in cell order: (y, x) is unique inside a cell


def _phases(buf: _Buffer) -> list[tuple[int, int, int, int]]:
    """(first step, end step, active units, active cells) for each run of steps with the same active set."""
    steps = int(buf.unit_niter[0])
    grid = np.arange(steps)
    units_on = len(buf.unit_niter) - np.searchsorted(buf.unit_niter[::-1], grid, side="right")
    cells_on = len(buf.cell_niter) - np.searchsorted(buf.cell_niter[::-1], grid, side="right")
    change = np.flatnonzero(np.diff(units_on) != 0) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [steps]])
    return [(int(a), int(b), int(units_on[a]), int(cells_on[a])) for a, b in zip(starts, ends)]


class _TileScales:
    """Power-of-two exponent per tile (block floating point), so float32 heat of long cells never underflows.

    Heat falls by up to 10^-86 from the centre of a long, thin cell to its tips; one float32 scale per cell cannot
    span that, one per 16x16 tile can. Every 8 steps each tile is rescaled so its maximum is about 1 (leaving
    2^127 of headroom for the fast growth just behind the heat front, and 2^-126 of range inside a tile); halo
    values are converted between neighbouring tiles' scales when copied. A tile the heat has not reached yet takes
    the exponent of a reached neighbour, so the first heat that enters it is representable.
    """

    def __init__(self, buf: _Buffer, source: torch.Tensor) -> None:
        pp = buf.width * buf.width
        device = source.device
        n_tiles = len(buf.unit_niter)
        self.pp = pp
        self.exponent = torch.zeros(n_tiles, dtype=torch.float32, device=device)
        self.src_tile = torch.from_numpy(buf.halo_src // pp).to(device)
        self.dst_tile = torch.from_numpy(buf.halo_dst // pp).to(device)
        self.centre_tile = torch.from_numpy(buf.source_index // pp).to(device)
        self.base = source.clone()
        self.source = source  # updated in place: the diffusion loop holds views of it
        self.factor = torch.ones(len(buf.halo_src), dtype=source.dtype, device=device)

    def renormalise(self, heat: torch.Tensor, k: int, e: int) -> bool:
        """Rescale the first k tiles (e halo entries) to a maximum of about 1 and update the conversion factors.

        Returns True when the scales have settled: no unreached tile borders a reached one (the heat front
        cannot enter a new tile) and no tile grew more than 2^4 since the last call.
        """
        tiles = heat[: k * self.pp].view(k, self.pp)
        peak = tiles.amax(1)
        reached = peak > 0
        # at most 2^120 per call keeps the factor finite; repeated calls converge
        shift = torch.where(reached, (torch.floor(torch.log2(peak))).clamp(-120, 120), 0.0)
        tiles.mul_(torch.exp2(-shift).to(heat.dtype)[:, None])
        exp = self.exponent[:k]
        exp += shift
        st, dt = self.src_tile[:e], self.dst_tile[:e]
        inherited = torch.full((k,), float("inf"), device=heat.device)
        inherited.scatter_reduce_(0, dt, torch.where(reached[st], exp[st], float("inf")), "amin")
        frontier = ~reached & torch.isfinite(inherited)
        exp.copy_(torch.where(frontier, inherited, exp))
        self.factor[:e] = torch.exp2((exp[st] - exp[dt]).clamp(-126, 126)).to(heat.dtype)
        self.source.copy_(self.base * torch.exp2(-self.exponent[self.centre_tile]).to(heat.dtype))
        return not bool(frontier.any()) and float(shift.max()) <= 4


def _diffuse(buf: _Buffer, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """Run every cell's heat diffusion in the buffer.

    Returns the flat heat (halos refreshed) and, per cell pixel, log2 of the factor turning it back into the
    unscaled heat that cellpose computes.
    """
    p = buf.width
    size = len(buf.mask9)
    heat = torch.zeros(size, dtype=dtype, device=device)
    mask9 = torch.from_numpy(buf.mask9).to(device=device, dtype=dtype)
    rows = torch.empty(size, dtype=dtype, device=device)
    box = torch.empty(size, dtype=dtype, device=device)
    src = torch.from_numpy(buf.halo_src).to(device)
    dst = torch.from_numpy(buf.halo_dst).to(device)
    halo = torch.empty(len(src), dtype=dtype, device=device)
    centres = torch.from_numpy(buf.source_index).to(device)
    # scale each cell's source so its heat (at most niter * source) uses float32's whole range
    scale = _F32_HEAT_CEILING / buf.cell_niter if dtype == torch.float32 else np.ones(len(buf.cell_niter))
    source = torch.from_numpy(scale).to(device=device, dtype=dtype)
    scales = _TileScales(buf, source) if buf.tiled and dtype == torch.float32 else None
    tiny = torch.finfo(dtype).tiny
    # Rescale every 8 steps while the heat front can still enter tiles (it must not cross a 16-px tile between
    # two rescales) or tiles grow fast; every 64 steps once the scales have settled. A non-finite result would
    # send the cell to the float64 rerun.
    next_rescale = 7
    for t0, t1, k, c in _phases(buf):
        m = int(buf.unit_rows_end[k - 1]) * p
        e = int(np.searchsorted(buf.halo_dst, m))
        # views are made once per phase: slicing costs about as much as a small tensor op
        cen, val, h_src, h_dst, h_buf = centres[:c], source[:c], src[:e], dst[:e], halo[:e]
        h_fac = scales.factor[:e] if scales else None
        h0, h1, h2, r = heat[: m - 2], heat[1 : m - 1], heat[2:m], rows[1 : m - 1]
        r0, r1, r2 = rows[1 : m - 2 * p - 1], rows[p + 1 : m - p - 1], rows[2 * p + 1 : m - 1]
        b, m9, out, live = box[p + 1 : m - p - 1], mask9[p + 1 : m - p - 1], heat[p + 1 : m - p - 1], heat[:m]
        for t in range(t0, t1):
            heat.index_add_(0, cen, val)
            if e:
                torch.index_select(heat, 0, h_src, out=h_buf)
                if scales:
                    h_buf.mul_(h_fac)
                heat.index_copy_(0, h_dst, h_buf)
            # 3x3 box sum: +-1 along a row, then +-p across rows; borders, halos and gaps are 0 in the mask
            torch.add(h0, h1, out=r).add_(h2)
            torch.add(r0, r1, out=b).add_(r2)
            torch.mul(b, m9, out=out)
            if t % 16 == 15:
                # denormals make float arithmetic very slow and carry no usable direction
                torch.nn.functional.threshold_(live, tiny, 0.0)
            if scales and t == next_rescale:
                next_rescale = t + (64 if scales.renormalise(heat, k, e) else 8)
    if len(src):
        torch.index_select(heat, 0, src, out=halo)
        if scales:
            halo.mul_(scales.factor)
        heat.index_copy_(0, dst, halo)
    log2_scale = -np.log2(scale)[buf.pix_cell]
    if scales:
        log2_scale += scales.exponent.cpu().numpy().astype(np.float64)[buf.pix_index // (p * p)]
    return heat, log2_scale


def _write_flows(buf: _Buffer, heat: torch.Tensor, log2_scale: np.ndarray, out: np.ndarray) -> list[_Cell]:
    """Write the unit-length heat gradient of every cell pixel into `out` (2, H, W); return underflowed cells."""
    p = buf.width
    idx = torch.from_numpy(buf.pix_index).to(heat.device)
    h = heat.double()
    h[h < torch.finfo(heat.dtype).tiny] = 0.0
    # back to cellpose's unscaled float64 heat, so its 1e-60 below shortens the same (far-tip) vectors
    unscale = np.exp2(log2_scale)
    g_row = (h[idx + p] - h[idx - p]).cpu().numpy() * unscale
    g_col = (h[idx + 1] - h[idx - 1]).cpu().numpy() * unscale
    gy = np.where(buf.pix_swap, g_col, g_row)
    gx = np.where(buf.pix_swap, g_row, g_col)
    norm = np.sqrt(gy * gy + gx * gx) + 1e-60  # cellpose's epsilon: a vanishing gradient gives a zero flow
    out[0, buf.pix_y, buf.pix_x] = gy / norm
    out[1, buf.pix_y, buf.pix_x] = gx / norm
    return _underflowed(buf, h, idx)


def _underflowed(buf: _Buffer, heat: torch.Tensor, idx: torch.Tensor) -> list[_Cell]:
    """Cells with a heat-free pixel next to a heated one (the heat reached it but rounded to 0) or with
    non-finite heat (a safety net for the float32 scaling)."""
    broken = np.unique(buf.pix_cell[(~torch.isfinite(heat[idx])).cpu().numpy()])
    if len(broken):
        heat = torch.nan_to_num(heat, nan=0.0, posinf=0.0)
    cold = torch.nonzero(heat[idx] == 0).flatten()
    bad = broken
    if len(cold):
        p, at = buf.width, idx[cold]
        near = torch.stack([heat[at + d] for d in (-p - 1, -p, -p + 1, -1, 1, p - 1, p, p + 1)]).amax(0)
        # pixels of a label piece the heat cannot reach are 0 together with all their neighbours, as in cellpose
        bad = np.union1d(bad, buf.pix_cell[cold[near > 0].cpu().numpy()])
    return [buf.cells[i] for i in bad]


def _buffers(cells: list[_Cell], ts: int) -> list[_Buffer]:
    """Lay every cell out in strip buffers (compact cells) or tile buffers (sparse cells)."""
    sparse = [_wants_tiles(c, ts) for c in cells]
    strips = [c for c, s in zip(cells, sparse) if not s]
    tiled = [c for c, s in zip(cells, sparse) if s]
    out = []
    for group in _group(strips, lambda c: c.mask.shape[1] + 2, lambda c: c.mask.shape[0] + 2):
        buf, cell_of, lr, lc = _strip_buffer(group)
        _place_pixels(buf, group, cell_of, lr, lc)
        out.append(buf)
    tiles_px = (ts + 2) ** 2
    for c in tiled:
        c.n_tiles = c.n_tiles or len(_tiles_of(c.mask, ts)[0])
    for group in _group(tiled, lambda c: 1, lambda c: tiles_px * c.n_tiles):
        buf, cell_of, lr, lc = _tile_buffer(group, ts)
        _place_pixels(buf, group, cell_of, lr, lc)
        out.append(buf)
    return out


def labels_to_flows(
    labels: np.ndarray | torch.Tensor,
    device: str | torch.device | None = None,
    precision: str = "float32",
    tile_size: int = 16,
    num_threads: int | None = 1,
) -> np.ndarray:
    """(2, H, W) float32 flows (flow_y, flow_x) of a (H, W) or (1, H, W) instance label image (0 = background).

    `precision` "float64" runs the diffusion in float64 (about 2x slower; float32 already agrees to a mean cosine
    of 1.0000). `num_threads` caps torch's CPU threads during the call (None: leave as is).
    """
    lab = _as_2d_labels(labels)
    out = np.zeros((2, *lab.shape), np.float32)
    if lab.size == 0 or not lab.any():
        return out
    lab = _compact_ids(lab)
    dtype = {"float32": torch.float32, "float64": torch.float64}[precision]
    device = torch.device(device or "cpu")
    with torch_threads(num_threads if device.type == "cpu" else None):
        redo = []
        for buf in _buffers(_cut_cells(lab), tile_size):
            redo += _write_flows(buf, *_diffuse(buf, dtype, device), out)
        # heat that still rounded to 0 next to heated pixels (float32 range exceeded): rerun those cells in float64
        for buf in _buffers(redo, tile_size):
            _write_flows(buf, *_diffuse(buf, torch.float64, device), out)
    return out


class LabelsToFlowsd(MapTransform):
    """Add Cellpose/MEDIAR flow targets (2, H, W) computed from a (1, H, W) or (H, W) instance label image.

    Flows depend on cell geometry: ``mediar_train_transforms`` computes them once per image before the random
    steps (so CacheDataset keeps them) and moves them with flow-aware flips, rotations and zoom
    (``cellzoo.targets.flow_geometry``). Run it after a spatial transform that has no flow-aware version. For
    scale: a 512x512 crop with 187 cells (NeurIPS CellSeg cell_00849) takes about 0.14 s on one core
    of the shared 2-core benchmark VM, against 0.48 s for cellpose 3.1 (docs/benchmarks.md).
    `scale` multiplies the unit vectors (MEDIAR trains on 5 x flows but applies the 5 in its loss, so keep 1).
    """

    def __init__(
        self,
        keys: KeysCollection,
        flow_key: str = "flows",
        scale: float = 1.0,
        device: str | torch.device | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError("LabelsToFlowsd takes exactly one label key")
        self.flow_key = flow_key
        self.scale = scale
        self.device = device

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """Return a copy of `data` with `flow_key` set to the flows of the label image."""
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            flows = labels_to_flows(label, device=self.device)
            if self.scale != 1.0:
                flows *= self.scale
            if isinstance(label, torch.Tensor):
                flows = convert_to_dst_type(flows, label, dtype=torch.float32)[0]
            d[self.flow_key] = flows
        return d
