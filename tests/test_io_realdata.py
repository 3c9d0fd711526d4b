"""cellzoo.io on the real microscopy sets in ../shared/realdata (skipped when that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellzoo.io import (
    coco_to_label_image,
    load_coco_json,
    read_cellseg,
    read_coco,
    read_ctc,
    read_ctc_tracks,
    read_image,
    read_labels,
    to_channel_first,
)
from cellzoo.io import read_labelfree_fields
from cellzoo.methods.isl import select_channels

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def dataset(name: str) -> Path:
    """Path of one real data set, skipping the test when it is not on this machine."""
    folder = REALDATA / name
    if not folder.is_dir():
        pytest.skip(f"real data set {folder} is not available")
    return folder


def instance_count(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def test_neurips_cellseg():
    root = dataset("neurips_cellseg")
    entries = read_cellseg(root)
    by_name = {e["name"]: e for e in entries}
    assert sorted(by_name) == ["cell_00225", "cell_00528", "cell_00849"]
    assert all("label" in e for e in entries)
    counts = {name: instance_count(read_labels(e["label"])) for name, e in by_name.items()}
    assert counts == {"cell_00225": 6, "cell_00528": 44, "cell_00849": 187}
    labels = read_labels(by_name["cell_00528"]["label"])
    assert labels.dtype == np.int16 and labels.shape == (200, 200)
    image, axes = read_image(by_name["cell_00849"]["image"])
    assert (image.shape, image.dtype, axes) == ((512, 512, 3), np.uint8, "YXC")
    image, axes = read_image(by_name["cell_00528"]["image"])
    assert (image.shape, image.dtype, axes) == ((200, 200), np.uint16, "YX")


def test_ctc_gowt1_tracking_layout():
    root = dataset("ctc_gowt1_tra")
    entries = read_ctc(root)
    assert len(entries) == 20
    assert [e["frame"] for e in sorted(entries, key=lambda e: e["frame"])] == list(range(20))
    assert not any("label" in e for e in entries)  # only TRA markers, no SEG masks
    assert all(e["tra"] == str(root / "01_GT" / "TRA" / f"man_track{e['frame']:03d}.tif") for e in entries)
    assert {e["sequence"] for e in entries} == {"01"}
    tracks = read_ctc_tracks(root / "01_GT" / "TRA" / "man_track.txt")
    assert len(tracks) == 24
    assert [(label, parent) for label, _, _, parent in tracks if parent] == [(22, 16)]
    assert (16, 0, 16, 0) in tracks and (22, 17, 19, 16) in tracks
    markers = read_labels(entries[0]["tra"])
    assert markers.dtype == np.uint16 and instance_count(markers) == 23


@pytest.mark.parametrize("json_name", ["annotations_polygons_plus_rle.json", "annotations_rle.json"])
def test_coco_derived_reproduces_source_labels(json_name):
    root = dataset("coco_derived")
    json_path = root / json_name
    entries = read_coco(json_path)
    assert len(entries) == 3
    assert sum(len(e["annotations"]) for e in entries) == 212
    assert sorted(len(e["annotations"]) for e in entries) == [44, 70, 98]
    label_files = {image["id"]: image["label_file"] for image in load_coco_json(json_path)["images"]}
    for entry in entries:
        assert Path(entry["image"]).is_file() and Path(entry["image"]).parent == root / "images"
        rebuilt = coco_to_label_image(entry["annotations"], entry["height"], entry["width"])
        source = read_labels(REALDATA / label_files[entry["image_id"]])
        np.testing.assert_array_equal(rebuilt, source)


def test_isl_labelfree():
    root = dataset("isl_labelfree")
    (entry,) = read_labelfree_fields(root)
    assert list(entry["inputs"]) == ["phase_z0", "phase_z6", "phase_z12"]
    assert sorted(entry["targets"]) == ["maxproj_DAPI_CONFOCAL", "maxproj_MAP2_CONFOCAL", "maxproj_NFH_CONFOCAL"]
    assert entry["labels"] == {}
    assert select_channels(list(entry["inputs"]), ["z12", "phase_z0"]) == ["phase_z12", "phase_z0"]
    image, axes = read_image(entry["targets"]["maxproj_DAPI_CONFOCAL"])
    assert (image.shape, image.dtype, axes) == ((1024, 1024), np.uint16, "YX")
    assert (int(image.min()), int(image.max())) == (13689, 65535)


def test_dsb2018_labels_and_rgba_images():
    root = dataset("dsb2018_stage1test")
    label_files = sorted((root / "labels").glob("*.tif"))
    assert len(label_files) == 11
    maxima = {path.stem[:8]: int(read_labels(path).max()) for path in label_files}
    assert maxima["0a849e0e"] == 50 and maxima["432f367a"] == 329 and maxima["17b9bf43"] == 11
    labels = read_labels(root / "labels" / "4f949bd8d914bbfa06f40d6a0e2b5b75c38bf53dbcbafc48c97f105bee4f8fac.tif")
    assert (labels.shape, labels.dtype, instance_count(labels)) == ((390, 239), np.uint16, 98)
    rgba, axes = read_image(root / "images" / "4f949bd8d914bbfa06f40d6a0e2b5b75c38bf53dbcbafc48c97f105bee4f8fac.png")
    assert (rgba.shape, axes) == ((390, 239, 4), "YXC")
    chw, chw_axes = to_channel_first(rgba, axes)
    assert (chw.shape, chw_axes, chw.dtype) == ((3, 390, 239), "CYX", np.float32)


def test_fnet_ome_tiff_is_zyx_float32():
    root = dataset("fnet_labelfree")
    for name, low, high in (("whole_cropped_light.tif", 0.2001, 0.9929), ("whole_cropped_nuc.tif", 0.1666, 0.6788)):
        image, axes = read_image(root / name)
        assert (image.shape, image.dtype, axes) == ((32, 128, 128), np.float32, "ZYX")
        assert image.min() == pytest.approx(low, abs=1e-4) and image.max() == pytest.approx(high, abs=1e-4)
