"""Read and write microscopy images with explicit axes strings (letters from "TCZYX")."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from cellzoo.errors import InputError
from cellzoo.io.files import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    OME_SUFFIXES,
    RASTER_SUFFIXES,
    TIFF_SUFFIXES,
    image_suffix,
    write_atomically,
)

AXES_LETTERS = "TCZYX"
# tifffile letters that carry no meaning we can map ("I" = generic pages, "Q" = unknown).
_UNKNOWN_TIFF_AXES = "IQ"
# NIfTI stores dimensions as x, y, z, t, then a 5th "vector" dimension used here for channels.
_NIFTI_AXES = "XYZTC"


def check_axes(axes: str, ndim: int, path: str | Path | None = None) -> str:
    """Validate an axes string against an array's ndim; returns it upper-cased."""
    axes = axes.upper()
    bad = set(axes) - set(AXES_LETTERS)
    if bad or len(set(axes)) != len(axes):
        raise InputError(f"invalid axes '{axes}': use distinct letters from '{AXES_LETTERS}'", path)
    if len(axes) != ndim:
        raise InputError(f"axes '{axes}' do not match the image's {ndim} dimensions", path)
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"axes '{axes}' must contain Y and X", path)
    return axes


# ---------------------------------------------------------------- reading


def read_image(path: str | Path, axes: str | None = None) -> tuple[np.ndarray, str]:
    """Read an image; return (array, axes) with axes from "TCZYX", dtype as stored."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    reader = _reader_for(path)
    try:
        array, found = reader(path)
    except InputError:
        raise
    except Exception as exc:  # codecs raise many unrelated types; report them all the same way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read image: {reason}", path) from exc
    if axes is not None:
        return array, check_axes(axes, array.ndim, path)
    if found is None:
        raise InputError("the image's axes are ambiguous; pass them explicitly, e.g. axes='ZYX'", path)
    return array, found


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from the file's header, without decoding its pixels; None when the header does not say.

    For checks over a whole data set before training (an image and its labels must have one size), where
    reading every image twice would double the start-up time.
    """
    path = Path(path)
    suffix = image_suffix(path)
    try:
        if suffix in OME_SUFFIXES or suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape, axes = tif.series[0].shape, tif.series[0].axes
            return (shape[axes.index("Y")], shape[axes.index("X")]) if "Y" in axes and "X" in axes else None
        if suffix in RASTER_SUFFIXES:
            from PIL import Image

            with Image.open(path) as image:
                return image.height, image.width
        if suffix in NIFTI_SUFFIXES:
            import nibabel

            shape = nibabel.load(str(path)).shape  # x, y, ...
            return (shape[1], shape[0]) if len(shape) >= 2 else None
    except Exception:  # unreadable headers are reported by the full read, with its own message
        return None
    return None


def _reader_for(path: Path) -> Callable[[Path], tuple[np.ndarray, str | None]]:
    suffix = image_suffix(path)
    if suffix in OME_SUFFIXES or suffix in TIFF_SUFFIXES:
        return _read_tiff
    if suffix in RASTER_SUFFIXES:
        return _read_raster
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti
    raise InputError(f"unsupported image format '{suffix}' (expected one of {', '.join(IMAGE_SUFFIXES)})", path)


def _read_tiff(path: Path) -> tuple[np.ndarray, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        raw_axes = series.axes
    return _tiff_axes_to_letters(array, raw_axes)


def _tiff_axes_to_letters(array: np.ndarray, raw_axes: str) -> tuple[np.ndarray, str | None]:
    """Map tifffile axes to TCZYX letters; None when they cannot be mapped without guessing."""
    # Unknown axes of size 1 carry no information, so they are dropped rather than guessed.
    keep = [i for i, a in enumerate(raw_axes) if not (a in _UNKNOWN_TIFF_AXES and array.shape[i] == 1)]
    array = array.reshape([array.shape[i] for i in keep])
    raw_axes = "".join(raw_axes[i] for i in keep)
    if "S" in raw_axes and "C" in raw_axes:
        array, raw_axes = _merge_samples_and_channels(array, raw_axes)
        if raw_axes is None:
            return array, None
    letters = raw_axes.replace("S", "C")
    if set(letters) - set(AXES_LETTERS) or len(set(letters)) != len(letters):
        return array, None
    return array, letters


def _merge_samples_and_channels(array: np.ndarray, raw_axes: str) -> tuple[np.ndarray, str | None]:
    """Drop whichever of the S/C axes has size 1; both larger than 1 is ambiguous."""
    for letter in "CS":
        i = raw_axes.index(letter)
        if array.shape[i] == 1:
            return np.squeeze(array, axis=i), raw_axes[:i] + raw_axes[i + 1 :]
    return array, None


def _read_raster(path: Path) -> tuple[np.ndarray, str]:
    array = _decode_raster(path)
    if array.ndim == 2:
        return array, "YX"
    if array.ndim == 3:
        return array, "YXC"
    raise InputError(f"cannot read image: unexpected raster shape {array.shape}", path)


def _decode_raster(path: Path) -> np.ndarray:
    if image_suffix(path) == ".png" and _png_bit_depth(path) == 16:
        import imagecodecs

        # Pillow truncates 16-bit RGB(A) PNGs to 8 bits; imagecodecs does not.
        return imagecodecs.png_decode(path.read_bytes())
    from PIL import Image

    # Pillow directly (it is imageio's backend) because imageio hides Pillow's error messages.
    with Image.open(path) as image:
        if image.mode == "P":  # palette indices are not intensities
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return np.asarray(image)


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as handle:
        header = handle.read(26)
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return header[24]


def _read_nifti(path: Path) -> tuple[np.ndarray, str]:
    import nibabel

    image = nibabel.load(str(path))
    # dataobj keeps the stored dtype; get_fdata() would always return float64.
    array = np.asanyarray(image.dataobj)
    if array.ndim < 2 or array.ndim > len(_NIFTI_AXES):
        raise InputError(f"cannot read image: unsupported NIfTI shape {array.shape}", path)
    stored = _NIFTI_AXES[: array.ndim]
    array, axes = _reorder(array, stored, [a for a in AXES_LETTERS if a in stored])
    if axes.startswith("T") and array.ndim == 5 and array.shape[0] == 1:
        # A 5D file needs a time slot to reach the channel slot; a size-1 T is that placeholder.
        array, axes = array[0], axes[1:]
    return np.ascontiguousarray(array), axes


def _reorder(array: np.ndarray, axes: str, order: list[str] | str) -> tuple[np.ndarray, str]:
    """Transpose `array` from `axes` to the letters of `order` (same set)."""
    return np.transpose(array, [axes.index(a) for a in order]), "".join(order)


# ---------------------------------------------------------------- writing


def as_label_dtype(labels: np.ndarray) -> np.ndarray:
    """Instance labels as uint16, the layouts' label type, unless their ids need more bits."""
    labels = np.asarray(labels)
    return labels.astype(np.uint16) if labels.size == 0 or (labels.min() >= 0 and labels.max() < 2**16) else labels


def write_image(path: str | Path, array: np.ndarray, axes: str) -> Path:
    """Write an image atomically, choosing the format from the file suffix."""
    path = Path(path)
    array = np.asarray(array)
    axes = check_axes(axes, array.ndim, path)
    suffix = image_suffix(path)
    if suffix in OME_SUFFIXES:
        return write_ome_tiff(path, array, axes)
    if suffix in TIFF_SUFFIXES:
        return write_tiff(path, array, axes)
    if suffix in (".png", ".jpg", ".jpeg"):
        if axes not in ("YX", "YXC"):
            raise InputError(f"{suffix} files need axes 'YX' or 'YXC', got '{axes}'", path)
        return write_png(path, array)
    if suffix in NIFTI_SUFFIXES:
        return write_nifti(path, array, axes)
    raise InputError(f"cannot write format '{suffix}' (use .tif, .ome.tif, .png, .jpg, .nii or .nii.gz)", path)


def write_tiff(path: str | Path, array: np.ndarray, axes: str, compression: str | None = "zlib") -> Path:
    """Write a TIFF whose description records `axes`, so read_image recovers them."""
    import tifffile

    array = np.asarray(array)
    axes = check_axes(axes, array.ndim, path)
    options = _tiff_layout(array, axes)

    def _write(tmp: Path) -> None:
        tifffile.imwrite(tmp, array, metadata={"axes": axes}, compression=compression, **options)

    return write_atomically(path, _write)


def _tiff_layout(array: np.ndarray, axes: str) -> dict:
    """Store a trailing C axis as TIFF samples (RGB when it looks like colour) instead of as pages."""
    if not axes.endswith("C"):
        return {"photometric": "minisblack"}
    if array.shape[-1] in (3, 4) and array.dtype in (np.uint8, np.uint16):
        return {"photometric": "rgb"}
    return {"photometric": "minisblack", "planarconfig": "contig"}


def write_ome_tiff(
    path: str | Path,
    array: np.ndarray,
    axes: str,
    physical_size_um: tuple[float, ...] | None = None,
    uuid: str | None = None,
) -> Path:
    """Write an OME-TIFF; physical_size_um is (y, x) or (z, y, x) pixel size in micrometres.

    `uuid` fixes the file's OME UUID (tifffile draws a random one), for byte-identical files.
    """
    import tifffile

    array = np.asarray(array)
    axes = check_axes(axes, array.ndim, path)
    metadata = {"axes": axes, **_physical_size_metadata(physical_size_um, path)}
    if uuid is not None:
        metadata["UUID"] = f"urn:uuid:{uuid}"
    options = _tiff_layout(array, axes)

    def _write(tmp: Path) -> None:
        tifffile.imwrite(tmp, array, ome=True, metadata=metadata, compression="zlib", **options)

    return write_atomically(path, _write)


def _physical_size_metadata(size_um: tuple[float, ...] | None, path: str | Path) -> dict:
    if size_um is None:
        return {}
    if len(size_um) not in (2, 3):
        raise InputError(f"physical_size_um must be (y, x) or (z, y, x), got {size_um}", path)
    names = ("PhysicalSizeZ", "PhysicalSizeY", "PhysicalSizeX")[-len(size_um) :]
    meta = {name: float(value) for name, value in zip(names, size_um)}
    meta.update({name + "Unit": "µm" for name in names})
    return meta


def write_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a YX or YXC (C in 1, 3, 4) image as PNG (8/16-bit, bool) or JPEG (8-bit, lossy)."""
    array = _raster_ready(np.asarray(array), path)
    if image_suffix(path) == ".png" and array.dtype != bool:
        import imagecodecs

        # imagecodecs writes 16-bit colour PNGs, which Pillow cannot.
        return write_atomically(path, lambda tmp: tmp.write_bytes(imagecodecs.png_encode(array)))
    import imageio.v3 as iio

    return write_atomically(path, lambda tmp: iio.imwrite(tmp, array, plugin="pillow"))


def _raster_ready(array: np.ndarray, path: str | Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"PNG/JPEG needs a YX or YXC image with 1, 3 or 4 channels, got shape {array.shape}", path)
    allowed = (np.uint8,) if image_suffix(path) in (".jpg", ".jpeg") else (np.uint8, np.uint16, np.bool_)
    if array.dtype.type not in allowed:
        raise InputError(f"cannot store {array.dtype} in {image_suffix(path)}; use .tif instead", path)
    return array


def write_nifti(path: str | Path, array: np.ndarray, axes: str) -> Path:
    """Write NIfTI (identity affine); C goes to the 5th dimension, missing Z/T become size 1."""
    import nibabel

    array = np.asarray(array)
    axes = check_axes(axes, array.ndim, path)
    stored = _NIFTI_AXES[: max(_NIFTI_AXES.index(a) for a in axes) + 1]
    for letter in stored:
        if letter not in axes:  # NIfTI dimensions are positional, so gaps need size-1 placeholders
            array, axes = array[np.newaxis], letter + axes
    array, _ = _reorder(array, axes, stored)
    if array.dtype == bool:
        array = array.astype(np.uint8)  # NIfTI has no boolean type
    image = nibabel.Nifti1Image(np.ascontiguousarray(array), affine=np.eye(4))
    return write_atomically(path, lambda tmp: nibabel.save(image, str(tmp)))


# ---------------------------------------------------------------- conversions


def to_channel_first(
    array: np.ndarray,
    axes: str,
    dtype: np.dtype | type | None = np.float32,
    drop_alpha: bool | None = None,
    allow_time: bool = False,
) -> tuple[np.ndarray, str]:
    """Return (array, axes) with C first (added if absent) and the rest in TZYX order."""
    array = np.asarray(array)
    axes = check_axes(axes, array.ndim)
    if "T" in axes and not allow_time:
        raise InputError(f"image has a time axis (axes '{axes}'); pass allow_time=True or select one frame")
    if "C" not in axes:
        array, axes = array[np.newaxis], "C" + axes
    array, axes = _reorder(array, axes, [a for a in "CTZYX" if a in axes])
    if drop_alpha is None:
        drop_alpha = array.shape[0] == 4 and array.dtype == np.uint8
    if drop_alpha and array.shape[0] == 4:
        array = array[:3]
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return np.ascontiguousarray(array), axes
