"""Round trips and error cases for cellzoo.io.images and cellzoo.io.validate."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellzoo.errors import InputError
from cellzoo.io import (
    check_finite,
    check_label_image,
    check_same_shape,
    read_image,
    read_labels,
    to_channel_first,
    write_image,
    write_nifti,
    write_ome_tiff,
    write_png,
    write_tiff,
)

RNG = np.random.default_rng(0)


def random_array(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Random test data spanning most of the dtype's range."""
    if dtype == "bool":
        return RNG.random(shape) > 0.5
    if np.issubdtype(np.dtype(dtype), np.floating):
        return (RNG.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -30000), min(info.max, 60000), size=shape, endpoint=True).astype(dtype)


TIFF_CASES = [
    ("YX", (7, 9), "uint8"),
    ("YX", (7, 9), "uint16"),
    ("YX", (7, 9), "int16"),
    ("YX", (7, 9), "int32"),
    ("YX", (7, 9), "float32"),
    ("YX", (7, 9), "float64"),
    ("YX", (7, 9), "bool"),
    ("ZYX", (3, 7, 9), "uint16"),
    ("CZYX", (2, 3, 7, 9), "float32"),
    ("TZYX", (2, 3, 7, 9), "uint8"),
    ("TCZYX", (2, 2, 3, 7, 9), "uint16"),
    ("YXC", (7, 9, 3), "uint8"),
    ("YXC", (7, 9, 4), "uint8"),
    ("YXC", (7, 9, 3), "uint16"),
    ("YXC", (7, 9, 2), "float32"),
    ("CYX", (5, 7, 9), "int32"),
]


@pytest.mark.parametrize("axes,shape,dtype", TIFF_CASES)
def test_tiff_round_trip(tmp_path, axes, shape, dtype):
    data = random_array(shape, dtype)
    path = write_tiff(tmp_path / "x.tif", data, axes)
    back, back_axes = read_image(path)
    assert back_axes == axes
    assert back.dtype == data.dtype
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize(
    "axes,shape,dtype",
    [
        ("YX", (7, 9), "uint8"),
        ("ZYX", (3, 7, 9), "float32"),
        ("CZYX", (2, 3, 7, 9), "uint16"),
        ("TCZYX", (2, 3, 4, 7, 9), "uint16"),
        ("YXC", (7, 9, 3), "uint8"),
    ],
)
def test_ome_tiff_round_trip(tmp_path, axes, shape, dtype):
    data = random_array(shape, dtype)
    path = write_image(tmp_path / "x.ome.tif", data, axes)
    back, back_axes = read_image(path)
    assert (back_axes, back.dtype) == (axes, data.dtype)
    np.testing.assert_array_equal(back, data)


def test_ome_tiff_records_physical_size(tmp_path):
    data = np.zeros((3, 4, 5), np.uint8)
    path = write_ome_tiff(tmp_path / "x.ome.tiff", data, "ZYX", physical_size_um=(2.0, 0.5, 0.25))
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    assert 'PhysicalSizeX="0.25"' in xml and 'PhysicalSizeY="0.5"' in xml and 'PhysicalSizeZ="2.0"' in xml


@pytest.mark.parametrize(
    "shape,dtype,axes",
    [
        ((7, 9), "uint8", "YX"),
        ((7, 9), "uint16", "YX"),
        ((7, 9), "bool", "YX"),
        ((7, 9, 3), "uint8", "YXC"),
        ((7, 9, 4), "uint8", "YXC"),
        ((7, 9, 3), "uint16", "YXC"),
        ((7, 9, 4), "uint16", "YXC"),
    ],
)
def test_png_round_trip(tmp_path, shape, dtype, axes):
    data = random_array(shape, dtype)
    back, back_axes = read_image(write_png(tmp_path / "x.png", data))
    assert (back_axes, back.dtype) == (axes, data.dtype)
    np.testing.assert_array_equal(back, data)


def test_png_single_channel_is_stored_as_yx(tmp_path):
    data = random_array((7, 9, 1), "uint8")
    back, axes = read_image(write_image(tmp_path / "x.png", data, "YXC"))
    assert axes == "YX"
    np.testing.assert_array_equal(back, data[..., 0])


def test_jpeg_round_trip_is_close(tmp_path):
    data = np.full((16, 16, 3), 120, np.uint8)
    data[4:12, 4:12] = 200
    back, axes = read_image(write_image(tmp_path / "x.jpg", data, "YXC"))
    assert axes == "YXC" and back.shape == data.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - data).mean() < 10  # lossy, but close


def test_bmp_is_readable(tmp_path):
    import imageio.v3 as iio

    data = random_array((7, 9, 3), "uint8")
    iio.imwrite(tmp_path / "x.bmp", data)
    back, axes = read_image(tmp_path / "x.bmp")
    assert axes == "YXC"
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize(
    "axes,shape,dtype,back_axes",
    [
        ("YX", (7, 9), "uint8", "YX"),
        ("ZYX", (3, 7, 9), "int16", "ZYX"),
        ("ZYX", (3, 7, 9), "float32", "ZYX"),
        ("TZYX", (2, 3, 7, 9), "uint16", "TZYX"),
        ("CZYX", (2, 3, 7, 9), "float64", "CZYX"),
        ("TCZYX", (2, 2, 3, 7, 9), "int32", "TCZYX"),
    ],
)
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path, axes, shape, dtype, back_axes, suffix):
    data = random_array(shape, dtype)
    back, found = read_image(write_nifti(tmp_path / f"x{suffix}", data, axes))
    assert (found, back.dtype) == (back_axes, data.dtype)
    np.testing.assert_array_equal(back, data)


def test_nifti_stores_x_first(tmp_path):
    import nibabel

    data = random_array((3, 7, 9), "uint8")
    path = write_image(tmp_path / "x.nii.gz", data, "ZYX")
    stored = np.asanyarray(nibabel.load(str(path)).dataobj)
    assert stored.shape == (9, 7, 3)  # nibabel's x, y, z
    np.testing.assert_array_equal(stored[2, 5, 1], data[1, 5, 2])


def test_nifti_channels_without_z_come_back_with_size_one_z(tmp_path):
    data = random_array((2, 7, 9), "float32")
    back, axes = read_image(write_nifti(tmp_path / "x.nii", data, "CYX"))
    assert axes == "CZYX" and back.shape == (2, 1, 7, 9)
    np.testing.assert_array_equal(back[:, 0], data)


def test_lzw_tiff_written_elsewhere_is_readable(tmp_path):
    data = random_array((3, 7, 9), "uint16")
    tifffile.imwrite(tmp_path / "lzw.tif", data, compression="lzw", photometric="minisblack", metadata={"axes": "ZYX"})
    back, axes = read_image(tmp_path / "lzw.tif")
    assert axes == "ZYX"
    np.testing.assert_array_equal(back, data)


def test_imagej_tiff_axes_are_used(tmp_path):
    data = random_array((3, 2, 7, 9), "uint16")
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    back, axes = read_image(tmp_path / "ij.tif")
    assert axes == "ZCYX" and back.shape == data.shape


def test_multipage_tiff_without_metadata_needs_explicit_axes(tmp_path):
    data = random_array((3, 7, 9), "uint8")
    tifffile.imwrite(tmp_path / "pages.tif", data, photometric="minisblack", metadata=None)
    with pytest.raises(InputError, match="axes="):
        read_image(tmp_path / "pages.tif")
    back, axes = read_image(tmp_path / "pages.tif", axes="zyx")
    assert axes == "ZYX"
    np.testing.assert_array_equal(back, data)


def test_single_page_tiff_without_metadata_is_yx(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((7, 9), np.uint8), metadata=None)
    assert read_image(tmp_path / "p.tif")[1] == "YX"


def test_axes_override_must_match_ndim(tmp_path):
    path = write_tiff(tmp_path / "x.tif", np.zeros((3, 7, 9), np.uint8), "ZYX")
    with pytest.raises(InputError, match="do not match the image's 3 dimensions"):
        read_image(path, axes="YX")
    with pytest.raises(InputError, match="invalid axes"):
        read_image(path, axes="ZQX")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as info:
        read_image(tmp_path / "nope.tif")
    assert "nope.tif" in str(info.value)


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.nii.gz", "bad.jpg"])
def test_corrupt_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="cannot read image") as info:
        read_image(tmp_path / name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_unsupported_suffix(tmp_path):
    (tmp_path / "x.czi").write_bytes(b"\0")
    with pytest.raises(InputError, match="unsupported image format '.czi'"):
        read_image(tmp_path / "x.czi")


def test_png_rejects_unstorable_data(tmp_path):
    with pytest.raises(InputError, match="use .tif"):
        write_image(tmp_path / "x.png", np.zeros((4, 4), np.float32), "YX")
    with pytest.raises(InputError, match="'YX' or 'YXC'"):
        write_image(tmp_path / "x.png", np.zeros((2, 4, 4), np.uint8), "CYX")
    assert not list(tmp_path.iterdir())


def test_write_is_atomic(tmp_path, monkeypatch):
    def broken_write(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4), np.uint8), "YX")
    assert not list(tmp_path.iterdir())  # neither the target nor the temp file is left behind


def test_write_replaces_existing_file(tmp_path):
    write_image(tmp_path / "x.tif", np.zeros((4, 4), np.uint8), "YX")
    write_image(tmp_path / "x.tif", np.ones((5, 5), np.uint16), "YX")
    back, _ = read_image(tmp_path / "x.tif")
    assert back.shape == (5, 5) and back.dtype == np.uint16
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_to_channel_first_drops_alpha_of_rgba_uint8():
    rgba = random_array((7, 9, 4), "uint8")
    out, axes = to_channel_first(rgba, "YXC")
    assert (axes, out.shape, out.dtype) == ("CYX", (3, 7, 9), np.float32)
    np.testing.assert_array_equal(out[1], rgba[..., 1].astype(np.float32))
    kept, _ = to_channel_first(rgba, "YXC", drop_alpha=False)
    assert kept.shape == (4, 7, 9)


def test_to_channel_first_keeps_four_channel_non_uint8():
    out, _ = to_channel_first(np.zeros((4, 7, 9), np.uint16), "CYX")
    assert out.shape == (4, 7, 9)


def test_to_channel_first_adds_channel_and_orders_axes():
    data = random_array((9, 3, 7), "uint16")  # stored as X, Z, Y
    out, axes = to_channel_first(data, "XZY", dtype=None)
    assert (axes, out.shape, out.dtype) == ("CZYX", (1, 3, 7, 9), np.uint16)
    np.testing.assert_array_equal(out[0], data.transpose(1, 2, 0))


def test_to_channel_first_time_axis():
    data = np.zeros((2, 5, 7, 9), np.uint8)
    with pytest.raises(InputError, match="time axis"):
        to_channel_first(data, "TYXC")
    out, axes = to_channel_first(data, "TYXC", allow_time=True, drop_alpha=False)
    assert axes == "CTYX" and out.shape == (9, 2, 5, 7)


# ---------------------------------------------------------------- validate


def test_check_finite(tmp_path):
    data = np.ones((4, 4), np.float32)
    assert check_finite(data, "a.tif") is data
    check_finite(np.ones((4, 4), np.uint8))
    for bad in (np.nan, np.inf, -np.inf):
        data[1, 1] = bad
        with pytest.raises(InputError, match="a.tif: contains NaN or inf pixels"):
            check_finite(data, "a.tif")


def test_check_label_image_errors():
    labels = np.zeros((4, 4), np.uint16)
    labels[1, 1] = 3
    assert check_label_image(labels, "l.tif") is labels
    with pytest.raises(InputError, match=r"l.tif: label image is not integer-typed \(float32\)"):
        check_label_image(labels.astype(np.float32), "l.tif")
    with pytest.raises(InputError, match=r"expected a 2D or 3D label image, got shape \(1, 1, 4, 4\)"):
        check_label_image(labels[None, None], "l.tif")
    with pytest.raises(InputError, match=r"label image is empty \(no labelled pixels\)"):
        check_label_image(np.zeros((4, 4), np.int32), "l.tif")
    with pytest.raises(InputError, match="negative"):
        check_label_image(-labels.astype(np.int16), "l.tif")


def test_check_same_shape_names_both_files():
    check_same_shape(np.zeros((3, 4)), np.zeros((3, 4)), "a.tif", "b.tif")
    with pytest.raises(InputError) as info:
        check_same_shape(np.zeros((3, 4)), np.zeros((4, 3)), "a.tif", "b.tif")
    assert "a.tif" in str(info.value) and "b.tif" in str(info.value)


def test_read_labels_squeezes_singleton_channel(tmp_path):
    labels = np.zeros((1, 3, 7, 9), np.int32)
    labels[0, 1, 2:4, 2:5] = 5
    path = write_tiff(tmp_path / "l.tif", labels, "CZYX")
    out = read_labels(path)
    assert out.shape == (3, 7, 9) and out.dtype == np.int32 and out.max() == 5


def test_read_labels_rejects_bad_label_files(tmp_path):
    float_labels = write_tiff(tmp_path / "f.tif", np.ones((4, 4), np.float32), "YX")
    with pytest.raises(InputError, match=r"f.tif: label image is not integer-typed \(float32\)"):
        read_labels(float_labels)
    empty = write_tiff(tmp_path / "e.tif", np.zeros((4, 4), np.uint16), "YX")
    with pytest.raises(InputError, match="e.tif: label image is empty"):
        read_labels(empty)
    rgb = write_png(tmp_path / "rgb.png", np.ones((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="must be YX or ZYX"):
        read_labels(rgb)
    with pytest.raises(InputError, match="file not found"):
        read_labels(tmp_path / "missing.tif")
