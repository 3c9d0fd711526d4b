"""Time-lapse simulation: cells drift, jitter, grow and divide; lineage in Cell Tracking Challenge form."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cellzoo.synthetic.optics import check_modalities, random_optics, render_images
from cellzoo.synthetic.shapes import Cell, assign_depth, paint, paint_stack, place_cells, random_cell

# Cell-cycle length range in frames: short enough that a 20-30 frame sequence shows divisions.
CYCLE = (14, 34)
# Contact inhibition: above this covered fraction cells stop growing and dividing.
MAX_COVERAGE = 0.6


def move(rng: np.random.Generator, cells: list[Cell], size: tuple[int, int], drift: np.ndarray,
         step: float) -> None:
    """Random walk plus common drift, slight rotation; centres reflected back into the field."""
    for c in cells:
        dy, dx = drift + rng.normal(0.0, step, 2)
        c.cy = float(_reflect(c.cy + dy, size[0]))
        c.cx = float(_reflect(c.cx + dx, size[1]))
        c.angle += float(rng.normal(0.0, 0.06))


def _reflect(v: float, n: int) -> float:
    """Mirror a coordinate at the field borders so cells stay in view."""
    v = abs(v)
    return 2 * (n - 1) - v if v > n - 1 else v


def repel(cells: list[Cell], sep: float = 1.0, iterations: int = 3) -> None:
    """Push overlapping cells apart (cells in culture rarely pile up; nuclei stay visible for tracking)."""
    if len(cells) < 2:
        return
    for _ in range(iterations):
        p = np.array([[c.cy, c.cx] for c in cells])
        r = np.array([c.radius for c in cells])
        d = p[:, None] - p[None]
        dist = np.hypot(d[..., 0], d[..., 1]) + np.eye(len(cells))
        need = sep * (r[:, None] + r[None]) * 0.8
        push = np.clip(need - dist, 0, None) / 2.0
        np.fill_diagonal(push, 0)
        shift = (d / dist[..., None] * push[..., None]).sum(1)
        for c, (sy, sx) in zip(cells, shift):
            c.cy += float(sy)
            c.cx += float(sx)


def mitotic_look(cell: Cell) -> None:
    """Frame before division: the cell rounds up and its chromatin condenses (smaller, brighter nucleus)."""
    cell.aspect = 1.0 + (cell.aspect - 1.0) * 0.3
    cell.nuc_scale *= 0.8
    cell.brightness = min(cell.brightness * 1.6, 1.4)


def divide(rng: np.random.Generator, mother: Cell, first_id: int) -> tuple[Cell, Cell]:
    """Split a mother into two daughters along her long axis, each with half her area and a new id."""
    r = mother.radius / np.sqrt(2.0)
    along = np.array([np.sin(mother.angle), np.cos(mother.angle)]) * mother.radius * 0.55
    kids = []
    for k, sgn in enumerate((1.0, -1.0)):
        d = random_cell(rng, first_id + k, mother.cy + sgn * along[0], mother.cx + sgn * along[1], r)
        kids.append(replace(d, brightness=mother.brightness, cz=mother.cz, half_height=mother.half_height))
    return kids[0], kids[1]


def simulate(rng: np.random.Generator, size: tuple[int, int], n_frames: int, density: str | float = "medium",
             cell_radius: tuple[float, float] = (10, 18), depth: int | None = None,
             step: float = 1.2) -> tuple[list[list[Cell]], dict[int, int]]:
    """Cell states per frame and the parent of every daughter id."""
    cells = place_cells(rng, size, None, density, cell_radius)
    if depth:
        cells = assign_depth(rng, cells, depth)
    cycle = {c.cid: int(rng.integers(*CYCLE)) for c in cells}
    age = {c.cid: int(rng.integers(0, cycle[c.cid])) for c in cells}  # unsynchronised population
    drift = rng.normal(0.0, 0.4, 2)
    next_id = max((c.cid for c in cells), default=0) + 1
    parents: dict[int, int] = {}
    frames = []
    for t in range(n_frames):
        if t:
            nxt = []
            crowded = sum(np.pi * c.radius**2 for c in cells) > MAX_COVERAGE * size[0] * size[1]
            for c in cells:
                age[c.cid] += 0 if crowded else 1
                if age[c.cid] < cycle[c.cid]:
                    c.radius *= 1.0 if crowded else 2 ** (0.5 / cycle[c.cid])  # area doubles per cycle
                    if age[c.cid] == cycle[c.cid] - 1:
                        mitotic_look(c)
                    nxt.append(c)
                    continue
                for kid in divide(rng, c, next_id):
                    parents[kid.cid], cycle[kid.cid], age[kid.cid] = c.cid, int(rng.integers(*CYCLE)), 0
                    nxt.append(kid)
                next_id += 2
            cells = nxt
            move(rng, cells, size, drift, step)
            repel(cells)
        frames.append([replace(c) for c in cells])
    return frames, parents


def lineage(nuclei: list[np.ndarray], cells: list[np.ndarray], parents: dict[int, int]) -> np.ndarray:
    """CTC tracks (L, B, E, P) from visible labels; a track with a gap is split into parent -> child."""
    present: dict[int, list[int]] = {}
    for t, lab in enumerate(nuclei):
        for i in np.unique(lab[lab > 0]):
            present.setdefault(int(i), []).append(t)
    next_id = max([*present, *parents, 0]) + 1
    last: dict[int, int] = {}  # original id -> id of its latest segment, for parent links
    rows = []
    for cid in sorted(present):
        ts = present[cid]
        cuts = [k for k in range(1, len(ts)) if ts[k] != ts[k - 1] + 1]
        p = last.get(parents.get(cid, 0), 0)
        for a, b in zip([0, *cuts], [*cuts, len(ts)]):
            tid = cid if a == 0 else next_id
            if a:
                next_id += 1
                for t in ts[a:b]:  # relabel the later segment in both label images
                    nuclei[t][nuclei[t] == cid] = tid
                    cells[t][cells[t] == cid] = tid
            rows.append((tid, ts[a], ts[b - 1], p))
            p = tid
        last[cid] = p
    return np.array(sorted(rows), np.int64).reshape(-1, 4)


def render_timelapse(size: tuple[int, int] = (256, 256), n_frames: int = 20, seed: int = 0,
                     density: str | float = "medium", cell_radius: tuple[float, float] = (10, 18),
                     depth: int | None = None, modalities: tuple[str, ...] = ("nuclear",)) -> dict:
    """Render a time-lapse: images {modality: (T, ...)}, labels (T, ...), CTC tracks (N, 4) as L B E P."""
    modalities = check_modalities(tuple(modalities))
    size = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    frames, parents = simulate(rng, size, int(n_frames), density, cell_radius, depth)
    optics = random_optics(rng, size)  # one microscope for the whole sequence; noise differs per frame
    lcs, lns = [], []
    images: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for cells in frames:
        lc, ln = paint_stack(cells, size, depth) if depth else paint(cells, size)
        for m, img in render_images(cells, lc, ln, rng, modalities, (0.0,), optics).items():
            images[m].append(img)
        lcs.append(lc)
        lns.append(ln)
    # rendered before the lineage pass: splitting gapped tracks renames ids, and the per-cell
    # appearance tables are keyed by the simulation ids
    tracks = lineage(lns, lcs, parents)
    return {"images": {m: np.stack(v) for m, v in images.items()}, "labels_cells": np.stack(lcs),
            "labels_nuclei": np.stack(lns), "tracks": tracks}
