"""Images larger than memory, read lazily: OME-Zarr (NGFF 0.4 and 0.5) and tiled (Big)TIFF.

`open_lazy(path, level=0)` gives a `LazyImage`: a zarr array that reads only the chunks a slice touches,
its axes as cellzoo's letters (TCZYX), the pixel size of the chosen pyramid level in µm, and the level's
path. Nothing is read until a region is sliced (`region`).

- OME-Zarr: the `multiscales` metadata (in `.zattrs` for 0.4, under `ome` in `zarr.json` for 0.5) names
  the axes, the levels and each level's scale; a level whose shape disagrees with the axes, or missing
  axes, is refused in one line naming the store.
- TIFF: tifffile's zarr store (`imread(aszarr=True)`) reads one tile (or strip) at a time; a pyramidal
  TIFF's levels are its series' levels. The axes come from the file (OME or ImageJ metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError

__all__ = ["LazyImage", "is_lazy_input", "open_lazy", "read_ngff_metadata"]

NGFF_VERSIONS = ("0.4", "0.5")
_UM = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "meter": 1e6, None: 1.0}


@dataclass
class LazyImage:
    """A lazily read image: `array[...]` reads only what it slices."""

    array: object                      # zarr.Array (or anything sliced like one)
    axes: str                          # TCZYX letters, one per array axis
    path: Path
    physical_size_um: tuple[float, ...] | None = None   # (y, x) of this level, when the file records it
    level: str = "0"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def yx(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    def region(self, y: slice, x: slice) -> np.ndarray:
        """The YX (or YXC) region, single-plane T/Z axes dropped; channels last when present."""
        index = []
        for letter, size in zip(self.axes, self.shape):
            if letter == "Y":
                index.append(y)
            elif letter == "X":
                index.append(x)
            elif letter == "C":
                index.append(slice(None))
            elif size == 1:
                index.append(0)
            else:
                raise InputError(f"axis {letter} has {size} planes; choose one (a 2D image or one plane is streamed)",
                                 self.path)
        data = np.asarray(self.array[tuple(index)])
        kept = [a for a, i in zip(self.axes, index) if not isinstance(i, int)]
        if "C" in kept:
            data = np.moveaxis(data, kept.index("C"), -1)
            if data.shape[-1] == 1:
                data = data[..., 0]
        return data


def is_lazy_input(path: str | Path) -> bool:
    """Whether `path` is read lazily: an OME-Zarr folder."""
    path = Path(path)
    return path.is_dir() and ((path / ".zattrs").is_file() or (path / "zarr.json").is_file())


def read_ngff_metadata(group, path: Path) -> dict:
    """The first `multiscales` entry of an NGFF group (0.4 or 0.5), checked for axes and levels."""
    attributes = dict(group.attrs)
    ome = attributes.get("ome", attributes)  # 0.5 keeps NGFF metadata under "ome"
    multiscales = ome.get("multiscales")
    if not multiscales:
        raise InputError("not an OME-Zarr image: no 'multiscales' metadata", path)
    entry = multiscales[0]
    version = str(ome.get("version", entry.get("version", "0.4")))
    if version not in NGFF_VERSIONS:
        raise InputError(f"OME-Zarr version {version} is not supported (supported: {', '.join(NGFF_VERSIONS)})", path)
    axes = entry.get("axes")
    if not axes:
        raise InputError("OME-Zarr multiscales metadata has no 'axes'", path)
    names = [str(a["name"] if isinstance(a, dict) else a).upper() for a in axes]
    if not set(names) <= set("TCZYX") or "Y" not in names or "X" not in names or len(set(names)) != len(names):
        raise InputError(f"OME-Zarr axes {names} must be distinct letters of TCZYX and include Y and X", path)
    if not entry.get("datasets"):
        raise InputError("OME-Zarr multiscales metadata has no 'datasets' (pyramid levels)", path)
    units = {str(a["name"]).upper(): a.get("unit") for a in axes if isinstance(a, dict)}
    return {"axes": "".join(names), "datasets": entry["datasets"], "units": units, "version": version}


def _scale(dataset: dict, axes: str, units: dict) -> tuple[float, float] | None:
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform["scale"]
            sizes = []
            for letter in "YX":
                factor = _UM.get(units.get(letter))
                if factor is None:
                    return None
                sizes.append(float(scale[axes.index(letter)]) * factor)
            return tuple(sizes)
    return None


def _open_zarr(path: Path, level: int) -> LazyImage:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises many types for a folder that is not a store
        raise InputError(f"cannot open OME-Zarr: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                         path) from err
    meta = read_ngff_metadata(group, path)
    datasets = meta["datasets"]
    if not 0 <= level < len(datasets):
        raise InputError(f"pyramid level {level} does not exist (levels 0..{len(datasets) - 1})", path)
    name = str(datasets[level]["path"])
    if name not in group:
        raise InputError(f"OME-Zarr level {name!r} named in the metadata is missing", path)
    array = group[name]
    if len(array.shape) != len(meta["axes"]):
        raise InputError(f"OME-Zarr level {name!r} has {len(array.shape)} dimensions but the metadata names "
                         f"{len(meta['axes'])} axes ({meta['axes']})", path)
    if level > 0:  # a lower level can never be larger than the one above it
        above = group[str(datasets[level - 1]["path"])].shape
        if any(s > a for s, a in zip(array.shape, above)):
            raise InputError(f"OME-Zarr level {name!r} ({tuple(array.shape)}) is larger than the level above it "
                             f"({tuple(above)}): inconsistent shapes", path)
    return LazyImage(array, meta["axes"], path, _scale(datasets[level], meta["axes"], meta["units"]), name)


def _open_tiff(path: Path, level: int) -> LazyImage:
    import tifffile
    import zarr

    from cellzoo.io.physical import read_physical_size_um

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            levels = len(series.levels)
            axes = series.levels[min(level, levels - 1)].axes
    except Exception as err:  # noqa: BLE001 - unreadable file: one line
        raise InputError(f"cannot read TIFF: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                         path) from err
    if not 0 <= level < levels:
        raise InputError(f"pyramid level {level} does not exist (levels 0..{levels - 1})", path)
    letters = axes.upper().replace("S", "C").replace("Q", "C").replace("I", "Z")
    if len(set(letters)) != len(letters) or not set(letters) <= set("TCZYX"):
        raise InputError(f"the TIFF's axes {axes!r} cannot be read as TCZYX", path)
    store = tifffile.imread(path, aszarr=True, level=level)
    array = zarr.open(store, mode="r")
    size = read_physical_size_um(path)
    if size is not None and level > 0:  # the metadata describes level 0
        full = tifffile.TiffFile(path).series[0].levels[0].shape
        factor = full[letters.index("Y")] / array.shape[letters.index("Y")]
        size = (size[0] * factor, size[1] * factor)
    return LazyImage(array, letters, path, size, str(level))


def open_lazy(path: str | Path, level: int = 0) -> LazyImage:
    """An OME-Zarr folder or a TIFF file, opened lazily at pyramid `level` (0: full resolution)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        return _open_zarr(path, int(level))
    if path.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8"):
        return _open_tiff(path, int(level))
    raise InputError("a large image must be an OME-Zarr folder or a (Big)TIFF file", path)
