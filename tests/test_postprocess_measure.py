"""Tests for cellzoo.postprocess: measurement table values, CSV round trip, 3D tables and outline overlays."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import regionprops
from skimage.segmentation import find_boundaries

from cellzoo.errors import InputError
from cellzoo.io.images import read_image
from cellzoo.postprocess import (
    MEASUREMENT_COLUMNS,
    MEASUREMENT_COLUMNS_3D,
    measure_cells,
    overlay_outlines,
    write_measurements_csv,
    write_overlay_png,
)


def rectangle_labels() -> np.ndarray:
    """30x40 labels with one 10x20 rectangle (label 1) at rows 5..14, columns 3..22."""
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:15, 3:23] = 1
    return labels


def test_rectangle_row_matches_hand_computed_values():
    (row,) = measure_cells(rectangle_labels())
    assert list(row) == list(MEASUREMENT_COLUMNS)
    assert row["label"] == 1 and row["area"] == 200
    assert (row["centroid_y"], row["centroid_x"]) == (9.5, 12.5)
    assert (row["bbox_min_y"], row["bbox_min_x"], row["bbox_max_y"], row["bbox_max_x"]) == (5, 3, 15, 23)
    # Second central moments of a 10 x 20 pixel grid: (n^2 - 1) / 12 along each axis.
    var_y, var_x = (10**2 - 1) / 12, (20**2 - 1) / 12
    assert row["eccentricity"] == pytest.approx(math.sqrt(1 - var_y / var_x))
    (props,) = regionprops(rectangle_labels())
    assert row["eccentricity"] == pytest.approx(props.eccentricity)
    assert row["perimeter"] == pytest.approx(props.perimeter)
    assert row["solidity"] == 1.0


def test_disk_perimeter_is_close_to_circumference():
    labels = np.zeros((100, 100), dtype=np.uint16)
    labels[disk((50, 50), 30)] = 5
    (row,) = measure_cells(labels)
    # skimage's boundary-pixel estimate runs about 3 % long on digital disks.
    assert row["perimeter"] == pytest.approx(2 * math.pi * 30, rel=0.05)
    assert row["area"] == pytest.approx(math.pi * 30**2, rel=0.01)
    assert row["eccentricity"] < 0.05


@pytest.mark.parametrize("channel_axis", [-1, 0])
def test_per_channel_mean_intensity_of_a_constant_cell(channel_axis):
    labels = rectangle_labels()
    image = np.random.default_rng(0).random((30, 40, 3)) * 100  # random outside the cell
    image[labels == 1] = (10, 20, 30)
    if channel_axis == 0:
        image = np.moveaxis(image, -1, 0)
    (row,) = measure_cells(labels, image, channel_axis=channel_axis)
    assert list(row)[-3:] == ["mean_intensity_0", "mean_intensity_1", "mean_intensity_2"]
    assert [row[f"mean_intensity_{c}"] for c in range(3)] == pytest.approx([10, 20, 30])


def test_grey_image_gives_mean_intensity_0():
    labels = rectangle_labels()
    image = np.where(labels == 1, 7, 200).astype(np.uint8)
    (row,) = measure_cells(labels, image)
    assert row["mean_intensity_0"] == 7.0
    assert "mean_intensity_1" not in row


def test_non_consecutive_labels():
    labels = np.zeros((20, 20), dtype=np.int64)
    labels[1:4, 1:4] = 17
    labels[10:12, 10:15] = 3
    rows = measure_cells(labels)
    assert [r["label"] for r in rows] == [3, 17]
    assert [r["area"] for r in rows] == [10, 9]


def test_spacing_scales_area_and_marks_anisotropic_perimeter_nan():
    (iso,) = measure_cells(rectangle_labels(), spacing=(2.0, 2.0))
    assert iso["area"] == 800 and iso["centroid_y"] == 19.0 and iso["bbox_max_x"] == 23
    (aniso,) = measure_cells(rectangle_labels(), spacing=(2.0, 1.0))
    assert aniso["area"] == 400 and math.isnan(aniso["perimeter"])


def test_3d_labels():
    labels = np.zeros((10, 12, 14), dtype=np.int32)
    labels[2:6, 3:8, 4:10] = 4
    image = np.full((10, 12, 14), 3.0)
    (row,) = measure_cells(labels, image)
    assert list(row) == [*MEASUREMENT_COLUMNS_3D, "mean_intensity_0"]
    assert row["area"] == 4 * 5 * 6
    assert (row["centroid_z"], row["centroid_y"], row["centroid_x"]) == (3.5, 5.0, 6.5)
    assert (row["bbox_min_z"], row["bbox_max_z"], row["bbox_max_x"]) == (2, 6, 10)
    assert row["solidity"] == 1.0 and row["mean_intensity_0"] == 3.0


def test_csv_round_trip(tmp_path):
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[disk((12, 12), 8)] = 2
    labels[25:35, 20:38] = 9
    image = np.random.default_rng(2).random((40, 40, 2))
    rows = measure_cells(labels, image, channel_axis=-1)
    path = write_measurements_csv(rows, tmp_path / "sub" / "cells.csv")
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        header = reader.fieldnames
        back = list(reader)
    assert header == [*MEASUREMENT_COLUMNS, "mean_intensity_0", "mean_intensity_1"]
    assert len(back) == len(rows) == 2
    for written, read in zip(rows, back):
        assert {key: type(value)(read[key]) for key, value in written.items()} == written
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_empty_labels_give_no_rows_and_a_header_only_csv(tmp_path):
    assert measure_cells(np.zeros((8, 8), dtype=np.uint8)) == []
    path = write_measurements_csv([], tmp_path / "empty.csv")
    assert path.read_text().strip() == ",".join(MEASUREMENT_COLUMNS)


@pytest.mark.parametrize(
    ("labels", "image"),
    [
        (np.zeros((5, 5), dtype=np.float32), None),
        (np.zeros(5, dtype=np.int32), None),
        (np.full((5, 5), -1, dtype=np.int32), None),
        (np.zeros((5, 5), dtype=np.int32), np.zeros((5, 6))),
    ],
)
def test_bad_measurement_input_is_an_input_error(labels, image):
    with pytest.raises(InputError):
        measure_cells(labels, image)


def touching_cells() -> np.ndarray:
    """Two touching rectangles, so the outline test covers a shared border."""
    labels = np.zeros((40, 50), dtype=np.int32)
    labels[5:25, 5:20] = 1
    labels[5:25, 20:40] = 2
    return labels


def test_outline_pixels_are_exactly_the_inner_boundaries():
    labels = touching_cells()
    image = np.random.default_rng(3).random((40, 50))
    plain = overlay_outlines(image, np.zeros_like(labels))
    out = overlay_outlines(image, labels, color=(255, 0, 128))
    edges = find_boundaries(labels, mode="inner")
    assert (out[edges] == (255, 0, 128)).all()
    np.testing.assert_array_equal(out[~edges], plain[~edges])
    assert edges[10, 19] and edges[10, 20]  # each touching cell keeps its own outline


def test_grey_overlay_shape_dtype_and_grey_values():
    out = overlay_outlines(np.random.default_rng(4).random((40, 50)), touching_cells())
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    interior = out[~find_boundaries(touching_cells(), mode="inner")]
    assert (interior[:, 0] == interior[:, 1]).all() and (interior[:, 1] == interior[:, 2]).all()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channel_images_give_rgb(channels):
    image = np.random.default_rng(5).random((40, 50, channels)).astype(np.float32)
    out = overlay_outlines(image, touching_cells())
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8


def test_uint16_input_is_percentile_scaled():
    image = np.linspace(0, 60000, 40 * 50).reshape(40, 50).astype(np.uint16)
    out = overlay_outlines(image, np.zeros((40, 50), dtype=np.int32))
    low, high = np.percentile(image, (1, 99.8))
    assert out.min() == 0 and out.max() == 255
    assert (out[image <= low] == 0).all() and (out[image >= high] == 255).all()
    middle = (image > low) & (image < high)
    expected = np.round((image[middle] - low) / (high - low) * 255)
    np.testing.assert_allclose(out[middle][:, 0], expected, atol=1)


def test_flat_image_and_bad_shapes():
    assert (overlay_outlines(np.full((10, 10), 5), np.zeros((10, 10), int)) == 0).all()
    with pytest.raises(InputError):
        overlay_outlines(np.zeros((10, 10)), np.zeros((10, 11), int))
    with pytest.raises(InputError):
        overlay_outlines(np.zeros((10, 10, 5)), np.zeros((10, 10), int))


def test_write_overlay_png_round_trip(tmp_path):
    image = np.random.default_rng(6).random((40, 50))
    path = write_overlay_png(tmp_path / "overlay.png", image, touching_cells())
    array, _ = read_image(path)
    np.testing.assert_array_equal(array, overlay_outlines(image, touching_cells()))
