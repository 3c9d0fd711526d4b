"""Cell Tracking Challenge layout: 01/t000.tif, 01_GT/SEG/man_seg000.tif, 01_ST/SEG, 01_GT/TRA (read and write)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from cellzoo.errors import InputError
from cellzoo.io.datalist import assign_folds
from cellzoo.io.files import write_text
from cellzoo.io.images import as_label_dtype, write_tiff
from cellzoo.io.validate import check_dir

SEQUENCE_RE = re.compile(r"^\d{2}$")
FRAME_RE = re.compile(r"^t(\d{3,4})\.tiff?$")
SEG_RE = re.compile(r"^man_seg(\d{3,4})\.tiff?$")
# 3D SEG ground truth is often annotated on single slices: man_seg_<frame>_<z>.tif
SEG_SLICE_RE = re.compile(r"^man_seg_(\d{3,4})_(\d{3,4})\.tiff?$")
TRA_RE = re.compile(r"^man_track(\d{3,4})\.tiff?$")

# (label path, "GT" or "ST", annotated z slice or None for a full mask)
_Label = tuple[Path, str, int | None]


def read_ctc(
    root: str | Path,
    sequences: list[str] | None = None,
    silver: bool = True,
    n_folds: int = 5,
    seed: int = 0,
) -> list[dict]:
    """List CTC frames; frames with SEG masks get "label" and "label_source", the rest are unlabelled."""
    root = check_dir(root)
    entries = [entry for seq in _select_sequences(root, sequences) for entry in _sequence_entries(root, seq, silver)]
    if not entries:
        raise InputError("no frames (tNNN.tif) in the sequence folders", root)
    return assign_folds(entries, n_folds=n_folds, seed=seed)


def _select_sequences(root: Path, sequences: list[str] | None) -> list[str]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and SEQUENCE_RE.match(p.name))
    if not found:
        raise InputError("not a Cell Tracking Challenge layout: no sequence folders (01, 02, ...)", root)
    if sequences is None:
        return found
    wanted = [f"{int(s):02d}" if str(s).isdigit() else str(s) for s in sequences]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise InputError(f"sequence(s) {', '.join(missing)} not found (available: {', '.join(found)})", root)
    return wanted


def _scan(folder: Path, pattern: re.Pattern) -> dict[tuple[int, ...], Path]:
    """Map the integer groups of each matching file name in folder to its path."""
    if not folder.is_dir():
        return {}
    matches = ((pattern.match(p.name), p) for p in folder.iterdir() if p.is_file())
    return {tuple(int(g) for g in m.groups()): p for m, p in matches if m}


def _sequence_entries(root: Path, seq: str, silver: bool) -> list[dict]:
    frames = _scan(root / seq, FRAME_RE)
    tracks = _scan(root / f"{seq}_GT" / "TRA", TRA_RE)
    labels = _frame_labels(root, seq, silver)
    entries = []
    for (frame,), image in sorted(frames.items()):
        base = {"image": str(image.absolute()), "sequence": seq, "frame": frame, "name": f"{seq}_t{frame:03d}"}
        if (frame,) in tracks:
            base["tra"] = str(tracks[(frame,)].absolute())
        entries.extend(_with_labels(base, labels.get(frame, [])))
    return entries


def _frame_labels(root: Path, seq: str, silver: bool) -> dict[int, list[_Label]]:
    """Gold (GT) SEG masks per frame; silver (ST) ones only for frames without any GT."""
    labels = _seg_labels(root / f"{seq}_GT" / "SEG", "GT")
    if silver:
        for frame, found in _seg_labels(root / f"{seq}_ST" / "SEG", "ST").items():
            labels.setdefault(frame, found)
    return labels


def _seg_labels(folder: Path, source: str) -> dict[int, list[_Label]]:
    full = _scan(folder, SEG_RE)
    labels: dict[int, list[_Label]] = {frame: [(path, source, None)] for (frame,), path in full.items()}
    for (frame, z), path in sorted(_scan(folder, SEG_SLICE_RE).items()):
        if (frame,) not in full:  # a full mask already covers every slice of that frame
            labels.setdefault(frame, []).append((path, source, z))
    return labels


def _with_labels(base: dict, labels: list[_Label]) -> list[dict]:
    """One entry per label file; several annotated slices of one frame get "_z<slice>" names."""
    if not labels:
        return [base]
    entries = []
    for path, source, z in labels:
        entry = {**base, "label": str(path.absolute()), "label_source": source}
        if z is not None:
            entry["label_slice"] = z
            if len(labels) > 1:
                entry["name"] = f"{base['name']}_z{z:03d}"
        entries.append(entry)
    return entries


def read_ctc_tracks(path: str | Path) -> list[tuple[int, int, int, int]]:
    """Parse a CTC man_track.txt into (label, begin, end, parent) tuples."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    lines = path.read_text().splitlines()
    return [_parse_track_line(line, number, path) for number, line in enumerate(lines, start=1) if line.strip()]


def _parse_track_line(line: str, number: int, path: Path) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(part) for part in line.split())
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or values[2] < values[1]:
        raise InputError(
            f"line {number}: expected 'L B E P' (4 non-negative integers, B <= E), got '{line.strip()}'", path
        )
    return values  # type: ignore[return-value]


# ---------------------------------------------------------------- writing


def frame_digits(n_frames: int) -> int:
    """Digits of the frame numbers: tNNN, or tNNNN for sequences of more than 1000 frames, as the challenge does."""
    return 3 if n_frames <= 1000 else 4


def write_ctc_frame(root: str | Path, sequence: str, frame: int, image: np.ndarray, axes: str, digits: int = 3,
                    gold: np.ndarray | None = None, silver: np.ndarray | None = None,
                    markers: np.ndarray | None = None) -> Path:
    """Write frame `frame` of sequence `sequence` (e.g. "01") with its gold (GT/SEG) and silver (ST/SEG)
    segmentations and tracking markers (GT/TRA, see `tra_markers`) where given; returns the frame's path."""
    root, t = Path(root), f"{frame:0{digits}d}"
    path = write_tiff(root / sequence / f"t{t}.tif", image, axes)
    for labels, folder, name in ((gold, "GT/SEG", "man_seg"), (silver, "ST/SEG", "man_seg"),
                                 (markers, "GT/TRA", "man_track")):
        if labels is not None:
            kind, sub = folder.split("/")
            write_tiff(root / f"{sequence}_{kind}" / sub / f"{name}{t}.tif", as_label_dtype(labels), axes)
    return path


def write_ctc_tracks(root: str | Path, sequence: str, tracks: list[tuple[int, int, int, int]]) -> Path:
    """Write a sequence's man_track.txt: one "L B E P" line per track (label, first, last frame, parent)."""
    lines = "".join(f"{label} {begin} {end} {parent}\n" for label, begin, end, parent in tracks)
    return write_text(Path(root) / f"{sequence}_GT" / "TRA" / "man_track.txt", lines)


def tra_markers(labels: np.ndarray) -> np.ndarray:
    """Tracking markers from a segmentation: each label eroded by about 2 px in-plane, as the challenge's
    TRA markers lie inside their cells; tiny labels are kept whole so that none vanishes."""
    size = (1, 5, 5) if labels.ndim == 3 else (5, 5)
    inner = ndimage.minimum_filter(labels, size) == ndimage.maximum_filter(labels, size)
    out = np.where(inner, labels, 0)
    lost = np.setdiff1d(np.unique(labels), np.unique(out))
    keep = np.isin(labels, lost)
    out[keep] = labels[keep]
    return as_label_dtype(out)
