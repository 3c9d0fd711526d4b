"""Cell and nucleus geometry: star-convex blobs, their placement and exact label rasterisation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from cellzoo.errors import InputError

# name -> (fraction of the field covered by cells, minimum centre distance in units of r_i + r_j).
# A separation below 1 lets neighbours overlap (the later cell occludes); "grow" px of label
# expansion closes gaps so confluent monolayers tile the plane the way real ones do.
DENSITIES: dict[str, tuple[float, float, int]] = {
    "sparse": (0.12, 1.15, 0),
    "medium": (0.35, 0.92, 0),
    "dense": (0.60, 0.80, 1),
    "confluent": (0.85, 0.72, 3),
}

N_HARMONICS = 4


@dataclass
class Cell:
    """Geometry and appearance of one cell; ids are shared by its cell and nucleus labels."""

    cid: int
    cy: float
    cx: float
    radius: float
    aspect: float
    angle: float
    harmonics: np.ndarray  # (K, 2): relative amplitude and phase of radial modes 2..K+1
    nuc_dy: float
    nuc_dx: float
    nuc_scale: float  # nucleus radius / cell radius
    nuc_aspect: float
    nuc_angle: float
    nuc_harmonics: np.ndarray
    brightness: float  # nuclear stain uptake, varies cell to cell as in real DNA stains
    cyto_brightness: float
    thickness: float  # peak optical path length (arbitrary units, ~1)
    spots: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (S, 3): r_frac, theta, weight
    cz: float = 0.0  # centre plane for 3D stacks
    half_height: float = 0.0  # axial half-extent for 3D stacks


def radius_profile(theta: np.ndarray, radius: float, aspect: float, angle: float, harmonics: np.ndarray) -> np.ndarray:
    """Boundary radius of a perturbed ellipse at polar angles `theta`."""
    a = radius * np.sqrt(aspect)
    b = radius / np.sqrt(aspect)
    t = theta - angle
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    wobble = sum(amp * np.cos(k * theta + phase) for k, (amp, phase) in enumerate(harmonics, start=2))
    return r * (1.0 + wobble)


def star_mask(cy: float, cx: float, radius: float, aspect: float, angle: float, harmonics: np.ndarray,
              shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Rasterise one star-convex blob; returns (bbox slices, boolean mask) or None when off-field."""
    reach = radius * np.sqrt(aspect) * (1.0 + np.abs(harmonics[:, 0]).sum()) + 1.0
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, shape[0])
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1)[:, None] - cy
    dx = np.arange(x0, x1)[None, :] - cx
    dist = np.hypot(dy, dx)
    mask = dist <= radius_profile(np.arctan2(dy, dx), radius, aspect, angle, harmonics)
    return (slice(y0, y1), slice(x0, x1)), mask


def nucleus_mask(cell: Cell, shape: tuple[int, int], scale: float = 1.0):
    """Rasterise a cell's nucleus (before clipping to the visible cell)."""
    r = cell.radius * cell.nuc_scale * scale
    return star_mask(cell.cy + cell.nuc_dy, cell.cx + cell.nuc_dx, r, cell.nuc_aspect, cell.nuc_angle,
                     cell.nuc_harmonics, shape)


def cell_mask(cell: Cell, shape: tuple[int, int], scale: float = 1.0):
    """Rasterise a cell's full (unoccluded) footprint."""
    return star_mask(cell.cy, cell.cx, cell.radius * scale, cell.aspect, cell.angle, cell.harmonics, shape)


def random_cell(rng: np.random.Generator, cid: int, cy: float, cx: float, radius: float) -> Cell:
    """Draw shape and appearance parameters of one cell centred at (cy, cx)."""
    # most cells are roundish; about one in four is spindle-like, as in fibroblast-type lines
    aspect = float(rng.uniform(1.8, 3.0) if rng.uniform() < 0.25 else rng.uniform(1.0, 1.6))
    harm = np.stack([rng.uniform(0.0, 0.11, N_HARMONICS) / np.arange(1, N_HARMONICS + 1) ** 0.5,
                     rng.uniform(0, 2 * np.pi, N_HARMONICS)], 1)
    nuc_scale = float(rng.uniform(0.38, 0.55))
    # offset small enough that the nucleus stays inside the cell's minor axis
    room = max(radius / np.sqrt(aspect) * (0.85 - nuc_scale * 1.25), 0.0)
    off = rng.uniform(0, room) * np.array([np.sin(a := rng.uniform(0, 2 * np.pi)), np.cos(a)])
    nharm = np.stack([rng.uniform(0.0, 0.05, 2), rng.uniform(0, 2 * np.pi, 2)], 1)
    n_spots = int(rng.integers(1, 6))
    spots = np.stack([rng.uniform(0, 0.7, n_spots), rng.uniform(0, 2 * np.pi, n_spots),
                      rng.uniform(0.5, 1.0, n_spots)], 1)
    return Cell(cid=cid, cy=float(cy), cx=float(cx), radius=float(radius), aspect=aspect,
                angle=float(rng.uniform(0, np.pi)), harmonics=harm, nuc_dy=float(off[0]), nuc_dx=float(off[1]),
                nuc_scale=nuc_scale, nuc_aspect=float(rng.uniform(1.0, 1.35)),
                nuc_angle=float(rng.uniform(0, np.pi)), nuc_harmonics=nharm,
                brightness=float(rng.uniform(0.55, 1.0)), cyto_brightness=float(rng.uniform(0.5, 1.0)),
                thickness=float(rng.uniform(0.7, 1.2)), spots=spots)


def density_params(density: str | float) -> tuple[float, float, int]:
    """Resolve a density preset name or a coverage fraction in (0, 1) to (coverage, separation, grow)."""
    if isinstance(density, str):
        if density not in DENSITIES:
            raise InputError(f"unknown density {density!r}; choose one of {sorted(DENSITIES)} or a float in (0, 1)")
        return DENSITIES[density]
    cov = float(density)
    if not 0.0 < cov < 1.0:
        raise InputError(f"density fraction must be in (0, 1), got {cov}")
    # interpolate separation/grow between the presets so a float behaves like the nearest names
    sep = float(np.interp(cov, [0.12, 0.35, 0.6, 0.85], [1.15, 0.92, 0.8, 0.72]))
    return cov, sep, int(round(np.interp(cov, [0.35, 0.85], [0, 3])))


def check_radius(cell_radius: tuple[float, float]) -> tuple[float, float]:
    """Validate a (min, max) radius range in pixels."""
    lo, hi = (float(v) for v in cell_radius)
    if not 2.0 <= lo <= hi:
        raise InputError(f"cell_radius must be (min, max) with 2 <= min <= max, got {cell_radius}")
    return lo, hi


def place_cells(rng: np.random.Generator, size: tuple[int, int], n_cells: int | None = None,
                density: str | float = "medium", cell_radius: tuple[float, float] = (8, 20)) -> list[Cell]:
    """Random sequential placement with a minimum centre distance; overlap allowed below separation 1."""
    coverage, sep, _ = density_params(density)
    lo, hi = check_radius(cell_radius)
    if n_cells is None:
        mean_area = np.pi * (lo * lo + lo * hi + hi * hi) / 3.0  # E[r^2] for r uniform on [lo, hi]
        n_cells = max(1, int(round(coverage * size[0] * size[1] / mean_area)))
    cells: list[Cell] = []
    centres = np.zeros((0, 2))
    radii = np.zeros(0)
    for _ in range(n_cells * 40):  # bounded attempts: dense fields saturate, sparse ones fill fast
        if len(cells) >= n_cells:
            break
        r = float(rng.uniform(lo, hi))
        c = rng.uniform(0, 1, 2) * np.array(size, float)
        if len(cells) and (np.hypot(*(centres - c).T) < sep * (radii + r)).any():
            continue
        cells.append(random_cell(rng, len(cells) + 1, c[0], c[1], r))
        centres = np.vstack([centres, c])
        radii = np.append(radii, r)
    return cells


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Zero every fragment of a label except its largest connected piece (in place; returns labels)."""
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        own = labels[sl] == idx
        comp, n = ndimage.label(own)
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            labels[sl][own & (comp != 1 + int(np.argmax(sizes)))] = 0
    return labels


def paint(cells: list[Cell], shape: tuple[int, int], cell_scale: np.ndarray | None = None,
          nuc_scale: np.ndarray | None = None, min_visible: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Paint cells in order (later ones occlude) and their nuclei clipped to the visible cell: 2D labels."""
    n = len(cells)
    cs = np.ones(n) if cell_scale is None else cell_scale
    ns = cs if nuc_scale is None else nuc_scale
    lc = np.zeros(shape, np.int32)
    full = np.zeros(max((c.cid for c in cells), default=0) + 1, np.int64)
    for cell, s in zip(cells, cs):
        if s <= 0 or (m := cell_mask(cell, shape, s)) is None:
            continue
        sl, mask = m
        lc[sl][mask] = cell.cid
        full[cell.cid] = mask.sum()
    keep_largest_component(lc)
    # cells mostly hidden under neighbours would be unrecognisable: drop them from truth and image alike
    visible = np.bincount(lc.ravel(), minlength=len(full))
    lost = (visible < min_visible * full) | (visible < 6)
    lost[0] = False
    lc[lost[lc]] = 0
    ln = np.zeros(shape, np.int32)
    for cell, s in zip(cells, ns):
        if s <= 0 or (m := nucleus_mask(cell, shape, s)) is None:
            continue
        sl, mask = m
        ln[sl][mask & (lc[sl] == cell.cid)] = cell.cid
    return lc, keep_largest_component(ln)


def grow_labels(lc: np.ndarray, ln: np.ndarray, grow: int) -> np.ndarray:
    """Expand cell labels into background by `grow` px so confluent cells touch (nuclei unchanged)."""
    if grow <= 0:
        return lc
    from skimage.segmentation import expand_labels

    return expand_labels(lc, grow).astype(np.int32)


def axial_scales(cells: list[Cell], z: float, nucleus: bool = False) -> np.ndarray:
    """Per-cell footprint scale in plane z for ellipsoid-like cells (0 where the plane misses a cell)."""
    cz = np.array([c.cz for c in cells])
    hh = np.array([c.half_height for c in cells]) * (0.6 if nucleus else 1.0)
    u = (z - cz) / np.maximum(hh, 1e-6)
    # flattened dome: a cell stays broad near its middle plane and tapers at top and bottom
    return np.sqrt(np.clip(1.0 - np.abs(u) ** 3, 0.0, None))


def assign_depth(rng: np.random.Generator, cells: list[Cell], depth: int) -> list[Cell]:
    """Give each cell a centre plane and axial half-height inside a stack of `depth` planes."""
    out = []
    for c in cells:
        hh = float(np.clip(c.radius * rng.uniform(0.35, 0.6), 1.5, depth / 2.0))
        out.append(replace(c, cz=float(rng.uniform(hh * 0.6, max(depth - 1 - hh * 0.6, hh * 0.6))), half_height=hh))
    return out


def paint_stack(cells: list[Cell], shape: tuple[int, int], depth: int) -> tuple[np.ndarray, np.ndarray]:
    """ZYX labels of ellipsoid-like cells: each plane paints scaled footprints; 3D fragments removed."""
    lc = np.zeros((depth, *shape), np.int32)
    ln = np.zeros_like(lc)
    for z in range(depth):
        lc[z], ln[z] = paint(cells, shape, axial_scales(cells, z), axial_scales(cells, z, True), min_visible=0.0)
    keep_largest_component(lc)
    ln[ln != lc] = 0
    return lc, keep_largest_component(ln)
