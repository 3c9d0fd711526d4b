"""Physical pixel sizes recorded in an image file, so that outputs derived from it can carry them on.

`write_ome_tiff(..., physical_size_um=...)` writes them; this reads them back (OME-XML Pixels attributes,
converted to micrometres). Used by bundles whose outputs are images of the same field as their input
(predicted fluorescence), which keep the input's calibration.
"""

from __future__ import annotations

from pathlib import Path

from cellzoo.io.files import OME_SUFFIXES, TIFF_SUFFIXES, image_suffix

__all__ = ["read_physical_size_um"]

# OME UnitsLength symbols -> micrometres per unit
_UM_PER_UNIT = {"pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "um": 1.0, "μm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


def read_physical_size_um(path: str | Path) -> tuple[float, float] | None:
    """(y, x) pixel size in µm from a file's OME-XML; None when the file records none (or is not OME-TIFF)."""
    path = Path(path)
    if image_suffix(path) not in OME_SUFFIXES + TIFF_SUFFIXES:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
    except Exception:  # an unreadable file is reported by the image reader, with its own message
        return None
    if not xml:
        return None
    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    sizes = []
    for axis in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{axis}")
        unit = str(pixels.get(f"PhysicalSize{axis}Unit", "µm"))  # the OME schema's default unit
        if value is None or unit not in _UM_PER_UNIT:
            return None
        sizes.append(float(value) * _UM_PER_UNIT[unit])
    return sizes[0], sizes[1]
