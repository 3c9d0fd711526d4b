"""Image formation: stain/optical-path maps from labels, then fluorescence and transmitted-light modalities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from cellzoo.errors import InputError
from cellzoo.synthetic.shapes import Cell

FLUORESCENCE = ("nuclear", "membrane", "mitochondria", "tubulin", "actin")
TRANSMITTED = ("brightfield", "brightfield_rgb", "phase", "dic")
MODALITIES = FLUORESCENCE + TRANSMITTED
DEFAULT_MODALITIES = ("nuclear", "membrane", "brightfield", "phase", "dic")
ORGANELLES = ("mitochondria", "tubulin", "actin")

PSF_SIGMA = 0.9  # in-focus lateral blur, px
DEFOCUS_RATE = 1.6  # extra blur (px) per unit |dz|
AXIAL_SIGMA = 1.6  # axial blur of 3D stacks, planes: the PSF is elongated along z
TIE_GAIN = 4.0  # transport-of-intensity strength: intensity change per unit dz and curvature of path length
# H&E optical-density vectors (R, G, B) of haematoxylin and eosin after Ruifrok & Johnston.
HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])


@dataclass
class Optics:
    """Acquisition parameters of one field: camera noise, background and illumination gain."""

    photons: float  # expected photon count at unit fluorescence signal
    read_noise: float  # camera read noise, counts (Gaussian)
    offset: float  # camera offset, counts
    background: float  # autofluorescence / out-of-focus haze relative to unit signal
    gain: np.ndarray  # smooth illumination field (vignetting x low-frequency unevenness), YX


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-12)


def illumination(rng: np.random.Generator, shape: tuple[int, int], vignette: float, unevenness: float) -> np.ndarray:
    """Low-frequency gain field: radial vignetting times smooth random shading, mean about 1."""
    coarse = rng.standard_normal((4, 4))
    shade = ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3, mode="nearest")[: shape[0], : shape[1]]
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    centre = rng.uniform(-0.3, 0.3, 2)
    r2 = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 2.0
    return ((1.0 - vignette * r2) * (1.0 + unevenness * shade / (np.abs(shade).max() + 1e-12))).astype(np.float32)


def random_optics(rng: np.random.Generator, shape: tuple[int, int], photons: float | None = None) -> Optics:
    """Draw plausible acquisition settings; photons=None picks a count between dim and bright."""
    ph = float(rng.uniform(60, 300)) if photons is None else float(photons)
    gain = illumination(rng, shape, rng.uniform(0.1, 0.35), rng.uniform(0.05, 0.15))
    return Optics(photons=ph, read_noise=float(rng.uniform(1.5, 5.0)), offset=float(rng.uniform(4, 20)),
                  background=float(rng.uniform(0.02, 0.08)), gain=gain)


def add_noise(signal: np.ndarray, rng: np.random.Generator, photons: float, read_noise: float, offset: float,
              full_scale: float = 1.6) -> np.ndarray:
    """Poisson shot noise on signal*photons plus Gaussian read noise and offset, scaled to [0, 1]."""
    counts = rng.poisson(np.clip(signal, 0, None) * photons).astype(np.float32)
    counts += rng.normal(offset, read_noise, signal.shape).astype(np.float32)
    return np.clip(counts / (photons * full_scale + offset), 0.0, 1.0).astype(np.float32)


def dome(labels: np.ndarray) -> np.ndarray:
    """Per-object height profile in [0, 1]: sqrt of the distance to the own boundary, normalised per label."""
    inner = (labels > 0) & ~find_boundaries(labels, mode="inner")
    edt = ndimage.distance_transform_edt(inner)
    top = np.zeros(int(labels.max()) + 1)
    np.maximum.at(top, labels.ravel(), edt.ravel())
    return np.sqrt(edt / np.maximum(top[labels], 1.0)).astype(np.float32)


def lut(cells: list[Cell], attr: str, size: int) -> np.ndarray:
    """Lookup table label id -> per-cell attribute (0 for background)."""
    table = np.zeros(max(size, max((c.cid for c in cells), default=0) + 1), np.float32)
    for c in cells:
        table[c.cid] = getattr(c, attr)
    return table


def spot_map(cells: list[Cell], ln: np.ndarray, sigma: float = 1.1) -> np.ndarray:
    """Chromocentre/nucleolus spots at per-cell positions, so they move with their nucleus over time."""
    img = np.zeros(ln.shape, np.float32)
    for c in cells:
        r = c.radius * c.nuc_scale * c.spots[:, 0]
        y = np.round(c.cy + c.nuc_dy + r * np.sin(c.spots[:, 1])).astype(int)
        x = np.round(c.cx + c.nuc_dx + r * np.cos(c.spots[:, 1])).astype(int)
        z = [int(round(c.cz))] * len(y) if ln.ndim == 3 else []
        ok = (y >= 0) & (y < ln.shape[-2]) & (x >= 0) & (x < ln.shape[-1])
        idx = tuple(np.asarray(a)[ok] for a in ((z, y, x) if ln.ndim == 3 else (y, x)))
        if ln.ndim == 3:
            idx = (np.clip(idx[0], 0, ln.shape[0] - 1), idx[1], idx[2])
        img[idx] += c.spots[ok, 2] * (ln[idx] == c.cid)
    return ndimage.gaussian_filter(img, sigma) * (2 * np.pi * sigma**2)


def _nuclear_density(cells: list[Cell], ln: np.ndarray, nd: np.ndarray, tex: np.ndarray,
                     spots: np.ndarray) -> np.ndarray:
    """DNA stain: per-cell uptake, brighter thick centre, chromatin texture and chromocentres."""
    bright = lut(cells, "brightness", int(ln.max()) + 1)[ln]
    return bright * (0.55 + 0.45 * nd) * np.clip(1 + 0.2 * tex, 0.3, None) + 0.35 * spots * bright


def _membrane_density(cells: list[Cell], lc: np.ndarray, ln: np.ndarray, tex: np.ndarray,
                      tex2: np.ndarray) -> np.ndarray:
    """Membrane/cytoplasm stain: textured cytoplasm, dimmer over the nucleus, bright rim at every cell border."""
    rim = ndimage.gaussian_filter(find_boundaries(lc, mode="inner").astype(np.float32), 0.6) * 1.8
    cyto = lut(cells, "cyto_brightness", int(lc.max()) + 1)[lc] * (0.4 + 0.2 * tex2 + 0.1 * tex) * (1 - 0.45 * (ln > 0))
    return np.clip(cyto + np.minimum(rim, 1.0) * (lc > 0) * 0.9, 0, None)


def _path_length(cells: list[Cell], lc: np.ndarray, ln: np.ndarray, cd: np.ndarray, nd: np.ndarray,
                 tex: np.ndarray, tex2: np.ndarray, spots: np.ndarray) -> np.ndarray:
    """Optical path length: dome-shaped cell thickness plus a thicker nucleus and dense nucleoli."""
    if lc.ndim == 3:  # path length accumulates through the stack: refractive excess per voxel, summed later
        opl = (0.12 * (lc > 0) + 0.06 * (ln > 0)) * (1 + 0.1 * tex)
    else:
        thick = lut(cells, "thickness", int(lc.max()) + 1)
        opl = thick[lc] * (0.3 + 0.7 * cd) * (1 + 0.08 * tex2) + 0.45 * thick[ln] * nd
    return opl + 0.15 * spots


def object_maps(cells: list[Cell], lc: np.ndarray, ln: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stain densities and optical path length of the specimen (2D YX or 3D ZYX), all tied to the labels."""
    # a 3D stack needs no cell dome (path length is summed over z): skip the costly 3D distance transform
    cd, nd = (lc > 0).astype(np.float32) if lc.ndim == 3 else dome(lc), dome(ln)
    tex, tex2 = smooth_noise(rng, lc.shape, 1.2), smooth_noise(rng, lc.shape, 2.5)
    spots = spot_map(cells, ln)
    nuclear = _nuclear_density(cells, ln, nd, tex, spots)
    eosin = (0.25 + 0.2 * cd) * (lc > 0) * np.clip(1 + 0.25 * tex2, 0, None) * (1 - 0.5 * (ln > 0))
    maps = {"nuclear": nuclear, "membrane": _membrane_density(cells, lc, ln, tex, tex2),
            "opl": _path_length(cells, lc, ln, cd, nd, tex, tex2, spots),
            "hema": nuclear * 0.9 + 0.06 * (lc > 0), "eosin": eosin}
    return {k: v.astype(np.float32) for k, v in maps.items()}


def _lines(lc: np.ndarray, ids: np.ndarray, p0: np.ndarray, p1: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Accumulate straight filaments (one per row of p0->p1), clipped to their own cell's visible region."""
    length = np.hypot(*(p1 - p0).T)
    steps = int(np.ceil(length.max(initial=1.0))) + 1
    t = np.linspace(0, 1, steps)
    y = np.round(p0[:, :1] + t * (p1 - p0)[:, :1]).astype(int)
    x = np.round(p0[:, 1:] + t * (p1 - p0)[:, 1:]).astype(int)
    ok = (y >= 0) & (y < lc.shape[0]) & (x >= 0) & (x < lc.shape[1])
    y, x = np.where(ok, y, 0), np.where(ok, x, 0)
    ok &= lc[y, x] == ids[:, None]
    w = np.broadcast_to((weight * length / steps)[:, None], ok.shape)  # ~weight per pixel whatever the sampling
    flat = np.bincount((y * lc.shape[1] + x)[ok], weights=w[ok], minlength=lc.size)
    return flat.reshape(lc.shape).astype(np.float32)


def _per_cell(cells: list[Cell], k: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Repeat one row per cell k[i] times (values: (n_cells, ...))."""
    return np.repeat(values, k, axis=0)


def _mitochondria(cells: list[Cell], lc: np.ndarray, ln: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Short worm-like segments scattered through the cytoplasm, crowded around the nucleus."""
    radius = np.array([c.radius for c in cells])
    k = np.maximum((radius**2 * 0.5).astype(int), 1)
    ids = _per_cell(cells, k, np.array([c.cid for c in cells]))
    centre = _per_cell(cells, k, np.array([[c.cy + c.nuc_dy, c.cx + c.nuc_dx] for c in cells]).reshape(-1, 2))
    r = _per_cell(cells, k, radius) * rng.uniform(0, 1, len(ids)) ** 0.8 * 1.3
    a, o = rng.uniform(0, 2 * np.pi, (2, len(ids)))
    p0 = centre + r[:, None] * np.stack([np.sin(a), np.cos(a)], 1)
    p1 = p0 + rng.uniform(2, 6, len(ids))[:, None] * np.stack([np.sin(o), np.cos(o)], 1)
    fil = _lines(lc, ids, p0, p1, rng.uniform(0.4, 1.0, len(ids)))
    # mitochondria sit above and below the nucleus too, but are thinner there in a widefield projection
    return ndimage.gaussian_filter(fil * (1 - 0.6 * (ln > 0)) + 0.05 * (lc > 0), 0.8) * 1.8


def _tubulin(cells: list[Cell], lc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Microtubules radiating from near the centrosome to the periphery, over a diffuse cytosolic pool."""
    k = np.full(len(cells), 24)
    radius = _per_cell(cells, k, np.array([c.radius for c in cells]))
    ids = _per_cell(cells, k, np.array([c.cid for c in cells]))
    centre = _per_cell(cells, k, np.array([[c.cy + c.nuc_dy, c.cx + c.nuc_dx] for c in cells]).reshape(-1, 2))
    a = rng.uniform(0, 2 * np.pi, len(ids))
    d = np.stack([np.sin(a), np.cos(a)], 1)
    p0 = centre + (radius * rng.uniform(0.1, 0.5, len(ids)))[:, None] * d  # not all from one point: no hot spot
    fil = _lines(lc, ids, p0, p0 + (radius * rng.uniform(1.0, 2.2, len(ids)))[:, None] * d,
                 rng.uniform(0.3, 1.0, len(ids)))
    return ndimage.gaussian_filter(0.6 * fil + 0.18 * (lc > 0), 0.7)


def _actin(cells: list[Cell], lc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stress fibres roughly along each cell's long axis plus a bright cortical rim."""
    k = rng.integers(2, 8, len(cells))
    radius = _per_cell(cells, k, np.array([c.radius for c in cells]))
    ids = _per_cell(cells, k, np.array([c.cid for c in cells]))
    ang = _per_cell(cells, k, np.array([c.angle for c in cells])) + rng.normal(0, 0.25, len(ids))
    mid = _per_cell(cells, k, np.array([[c.cy, c.cx] for c in cells]).reshape(-1, 2))
    along = np.stack([np.sin(ang), np.cos(ang)], 1)
    across = np.stack([np.cos(ang), -np.sin(ang)], 1)
    p0 = mid + (radius * rng.uniform(-0.8, 0.8, len(ids)))[:, None] * across - 2 * radius[:, None] * along
    fil = _lines(lc, ids, p0, p0 + 4 * radius[:, None] * along, rng.uniform(0.2, 0.8, len(ids)))
    rim = find_boundaries(lc, mode="inner").astype(np.float32)
    return ndimage.gaussian_filter(fil + 0.7 * rim + 0.1 * (lc > 0), 0.7)


def organelle_map(name: str, cells: list[Cell], lc: np.ndarray, ln: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simple organelle textures tied to each cell: mitochondria, microtubules or actin (2D only)."""
    if lc.ndim != 2:
        raise InputError(f"modality {name!r} is only rendered in 2D fields")
    if not cells:
        return np.zeros(lc.shape, np.float32)
    if name == "mitochondria":
        return _mitochondria(cells, lc, ln, rng)
    if name == "tubulin":
        return _tubulin(cells, lc, rng)
    if name == "actin":
        return _actin(cells, lc, rng)
    raise InputError(f"unknown organelle {name!r}; choose one of {ORGANELLES}")


def defocus_sigma(dz: float) -> float:
    """Lateral blur (px) at defocus dz: the in-focus PSF widened in quadrature by the defocus."""
    return float(np.hypot(PSF_SIGMA, DEFOCUS_RATE * dz))


def fluorescence(density: np.ndarray, dz: float | None, optics: Optics, rng: np.random.Generator) -> np.ndarray:
    """Widefield fluorescence: blur (defocus or anisotropic 3D PSF), illumination gain, Poisson-Gaussian noise."""
    sigma = (AXIAL_SIGMA, PSF_SIGMA, PSF_SIGMA) if dz is None else defocus_sigma(dz)
    signal = (ndimage.gaussian_filter(density, sigma) + optics.background) * optics.gain
    return add_noise(signal, rng, optics.photons, optics.read_noise, optics.offset)


def _tie(opl_blur: np.ndarray, dz: float) -> np.ndarray:
    """Transport-of-intensity factor 1 - dz * laplacian(path): contrast of phase objects flips across focus."""
    return np.clip(1.0 - dz * TIE_GAIN * ndimage.laplace(opl_blur), 0.05, None)


def transmitted(name: str, maps: dict[str, np.ndarray], dz: float, optics: Optics,
                rng: np.random.Generator) -> np.ndarray:
    """Brightfield (grey or H&E RGB), phase contrast or DIC from the path-length/absorption maps."""
    s = defocus_sigma(dz)
    opl = ndimage.gaussian_filter(maps["opl"], s)
    tie = _tie(opl, dz)
    gain = optics.gain
    if name == "brightfield":  # weak absorption: cells slightly darker than the bright background
        signal = 0.72 * gain * np.exp(-0.05 * opl) * tie
    elif name == "phase":  # phase plate: high-pass of path length -> dark cells with bright halos
        hp = opl - ndimage.gaussian_filter(opl, 5.0)
        signal = 0.5 * gain * np.clip(1.0 - 1.1 * hp, 0.05, None) * tie
    elif name == "dic":  # shear interference: directional derivative gives relief shading
        g = (np.gradient(opl, axis=0) + np.gradient(opl, axis=1)) / np.sqrt(2)
        signal = gain * np.clip(0.5 + 1.4 * g, 0.02, None) * tie
    elif name == "brightfield_rgb":  # Beer-Lambert with haematoxylin (nuclei) and eosin (cytoplasm)
        od = (ndimage.gaussian_filter(maps["hema"], s)[..., None] * HEMATOXYLIN * 1.3
              + ndimage.gaussian_filter(maps["eosin"], s)[..., None] * EOSIN * 0.55)
        signal = 0.8 * gain[..., None] * np.power(10.0, -od) * tie[..., None]
    else:
        raise InputError(f"unknown transmitted-light modality {name!r}; choose one of {TRANSMITTED}")
    # transmitted light is bright: many photons per pixel, so noise is low but present
    return add_noise(signal, rng, optics.photons * 30, optics.read_noise * 3, optics.offset, full_scale=1.0)


def check_modalities(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """Validate modality names."""
    bad = [m for m in modalities if m not in MODALITIES]
    if bad:
        raise InputError(f"unknown modalities {bad}; choose from {MODALITIES}")
    return tuple(modalities)


# ---------------------------------------------------------------- whole field

def render_images(cells: list[Cell], lc: np.ndarray, ln: np.ndarray, rng: np.random.Generator,
                  modalities: tuple[str, ...], z_planes: tuple[float, ...], optics: Optics) -> dict[str, np.ndarray]:
    """Render every requested modality from one specimen; several z_planes (2D) stack on a leading axis."""
    maps = object_maps(cells, lc, ln, rng)
    if lc.ndim == 3:  # transmitted light integrates path length through the whole stack
        flat = {"opl": maps["opl"].sum(0), "hema": maps["hema"].max(0), "eosin": maps["eosin"].max(0)}
        dzs = tuple((np.arange(lc.shape[0]) - (lc.shape[0] - 1) / 2) * 0.5)
    images = {}
    for m in modalities:
        if m in ORGANELLES:
            maps[m] = organelle_map(m, cells, lc, ln, rng)
        if lc.ndim == 3 and m in FLUORESCENCE:
            images[m] = fluorescence(maps[m], None, optics, rng)
            continue
        planes = [fluorescence(maps[m], dz, optics, rng) if m in FLUORESCENCE
                  else transmitted(m, flat if lc.ndim == 3 else maps, dz, optics, rng)
                  for dz in (dzs if lc.ndim == 3 else z_planes)]
        images[m] = planes[0] if len(planes) == 1 else np.stack(planes)
    return images


def render_field(size: tuple[int, int] = (256, 256), seed: int = 0, n_cells: int | None = None,
                 density: str | float = "medium", cell_radius: tuple[float, float] = (8, 20),
                 modalities: tuple[str, ...] = DEFAULT_MODALITIES, z_planes: tuple[float, ...] = (0.0,),
                 depth: int | None = None, photons: float | None = None) -> dict:
    """Render one synthetic field of view with exact cell/nucleus labels and all requested modalities."""
    from skimage.segmentation import relabel_sequential

    from cellzoo.synthetic.shapes import assign_depth, density_params, grow_labels, paint, paint_stack, place_cells

    modalities = check_modalities(tuple(modalities))
    size = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    cells = place_cells(rng, size, n_cells, density, cell_radius)
    if depth:
        cells = assign_depth(rng, cells, int(depth))
        lc, ln = paint_stack(cells, size, int(depth))
    else:
        lc, ln = paint(cells, size)
        lc = grow_labels(lc, ln, density_params(density)[2])
    # consecutive ids make the labels easy to use; cells keep their matching ids
    lc, fwd, _ = relabel_sequential(lc)
    ln = fwd[ln].astype(np.int32)
    cells = [c for c in cells if fwd[c.cid] > 0]
    for c in cells:
        c.cid = int(fwd[c.cid])
    optics = random_optics(rng, size, photons)
    images = render_images(cells, lc.astype(np.int32), ln, rng, modalities, tuple(z_planes), optics)
    return {"labels_cells": lc.astype(np.int32), "labels_nuclei": ln, "images": images, "cells": cells,
            "z_planes": tuple(z_planes), "depth": depth, "optics": optics}
