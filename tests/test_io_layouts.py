"""Dataset layout readers and MONAI datalists on tiny layouts built inside each test."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cellzoo.errors import InputError
from cellzoo.io import (
    assign_folds,
    coco_to_label_image,
    label_image_to_coco,
    load_coco_json,
    load_datalist,
    read_cellseg,
    read_coco,
    read_ctc,
    read_ctc_tracks,
    read_image,
    read_labelfree_fields,
    read_lightmycells,
    select_items,
    split_items,
    write_datalist,
    write_image,
    write_png,
)
from cellzoo.methods.isl import select_channels


def touch_image(path: Path, shape: tuple[int, ...] = (6, 8), value: int = 1) -> Path:
    """Write a small real image (so readers that open files would work too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, dtype=np.uint16)
    if path.suffix == ".png":
        return write_png(path, data)
    return write_image(path, data, "ZYX"[-len(shape) :])


def toy_labels() -> np.ndarray:
    """Three instances, one of them drawn partly over another in COCO order."""
    labels = np.zeros((20, 24), np.uint16)
    labels[2:7, 3:9] = 1
    labels[10:18, 12:20] = 2
    labels[12:15, 2:5] = 3
    labels[16, 5] = 3  # a second, one-pixel component of label 3
    return labels


# ---------------------------------------------------------------- datalist


def test_assign_folds_is_balanced_and_deterministic():
    entries = [{"name": str(i)} for i in range(23)]
    folds = [e["fold"] for e in assign_folds(entries, n_folds=5, seed=3)]
    assert sorted(Counter(folds).values()) == [4, 4, 5, 5, 5]
    assert folds == [e["fold"] for e in assign_folds(entries, n_folds=5, seed=3)]
    assert folds != [e["fold"] for e in assign_folds(entries, n_folds=5, seed=4)]
    assert "fold" not in entries[0]  # the input is not modified
    with pytest.raises(InputError, match="n_folds"):
        assign_folds(entries, n_folds=0)


def test_split_items_by_fold_or_by_name(caplog):
    entries = assign_folds([{"name": str(i)} for i in range(10)], n_folds=5)
    split = split_items(entries, val_fold=2)
    assert len(split["train"]) == 8 and len(split["val"]) == 2 and all(e["fold"] == 2 for e in split["val"])
    assert not {e["name"] for e in split["train"]} & {e["name"] for e in split["val"]}
    named = split_items(entries, train_items=["7", "3"], val_items=["0"])
    assert [e["name"] for e in named["train"]] == ["7", "3"] and [e["name"] for e in named["val"]] == ["0"]
    with pytest.raises(InputError, match="no item named 12 among the 10 found"):
        split_items(entries, train_items=["12"])
    left = split_items(entries, val_fold=0, exclude_items=["0", "1", "2", "3"])  # a study's test items
    assert {e["name"] for e in left["train"] + left["val"]} == {"4", "5", "6", "7", "8", "9"}
    assert not {e["name"] for e in left["train"]} & {e["name"] for e in left["val"]}
    with pytest.raises(InputError, match="no labelled items"):
        split_items([])
    one = assign_folds([{"name": "only"}], n_folds=5)
    with caplog.at_level("WARNING"):
        split = split_items(one, val_fold=0)  # the single item is in fold 0: nothing left to train on
    assert split["train"] == split["val"] == one
    assert "training on the 1 validation item(s)" in caplog.text
    caplog.clear()
    in_fold_0 = next(e["name"] for e in entries if e["fold"] == 0)  # named for training, in the validation fold
    named_only = split_items(entries, train_items=[in_fold_0])
    assert [e["name"] for e in named_only["train"]] == [in_fold_0]
    assert [e["fold"] for e in named_only["val"]] == [0] and in_fold_0 not in {e["name"] for e in named_only["val"]}
    assert not caplog.text
    unfolded = [{"name": n} for n in "abcde"]  # a layout without folds, e.g. PMC's: the others validate
    split = split_items(unfolded, train_items=["a"])
    assert [e["name"] for e in split["val"]] == ["b", "c", "d", "e"] and not caplog.text
    with caplog.at_level("WARNING"):
        split = split_items(unfolded[:1], train_items=["a"])
    assert split["val"] == split["train"] and "validating on the 1 training item(s)" in caplog.text


def test_select_items_keeps_the_given_order():
    entries = [{"name": n} for n in "abc"]
    assert [e["name"] for e in select_items(entries, ["c", "a"])] == ["c", "a"]
    assert select_items(entries, None) == entries


# load_datalist imports MONAI, which alone takes ~30 s of CPU on a cold start.
@pytest.mark.slow
def test_datalist_round_trip(tmp_path):
    data = tmp_path / "data"
    image, label = touch_image(data / "images" / "a.tif"), touch_image(data / "labels" / "a.tif")
    z0, z1 = touch_image(data / "images" / "z0.tif"), touch_image(data / "images" / "z1.tif")
    outside = touch_image(tmp_path / "elsewhere" / "b.tif")
    training = [
        {"image": str(image), "label": str(label), "name": "a", "fold": 0, "sequence": "01"},
        {"image": [str(z0), str(z1)], "targets": {"Nucleus": str(label)}, "name": "b", "fold": 1},
    ]
    (data / "01").mkdir()  # a folder named like the "sequence" value must not turn it into a path
    path = write_datalist(data / "datalist.json", training, validation=[{"image": str(outside)}], note="toy")
    raw = json.loads(path.read_text())
    assert raw["training"][0]["image"] == "images/a.tif" and raw["training"][0]["label"] == "labels/a.tif"
    assert raw["training"][1]["image"] == ["images/z0.tif", "images/z1.tif"]
    assert raw["training"][1]["targets"] == {"Nucleus": "labels/a.tif"}
    assert raw["validation"][0]["image"] == str(outside)  # outside base_dir: stays absolute
    assert raw["testing"] == [] and raw["note"] == "toy"

    loaded = load_datalist(path)
    assert loaded[0]["image"] == str(image) and loaded[0]["label"] == str(label)
    assert loaded[0]["sequence"] == "01" and loaded[0]["name"] == "a" and loaded[0]["fold"] == 0
    assert loaded[1]["image"] == [str(z0), str(z1)] and loaded[1]["targets"] == {"Nucleus": str(label)}
    assert load_datalist(path, key="validation")[0]["image"] == str(outside)


@pytest.mark.slow
def test_datalist_base_dir(tmp_path):
    image = touch_image(tmp_path / "data" / "a.tif")
    path = write_datalist(tmp_path / "lists" / "d.json", [{"image": str(image)}], base_dir=tmp_path / "data")
    assert json.loads(path.read_text())["training"][0]["image"] == "a.tif"
    assert load_datalist(path, base_dir=tmp_path / "data")[0]["image"] == str(image)


def test_load_datalist_errors(tmp_path):
    """These checks run before MONAI is imported."""
    path = write_datalist(tmp_path / "d.json", [])
    with pytest.raises(InputError, match="no 'validaton' section"):
        load_datalist(path, key="validaton")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json: invalid JSON"):
        load_datalist(tmp_path / "bad.json")
    with pytest.raises(InputError, match="file not found"):
        load_datalist(tmp_path / "none.json")


# ---------------------------------------------------------------- CellSeg


def test_read_cellseg(tmp_path):
    for name in ("a.png", "b.tif", "c.tiff"):
        touch_image(tmp_path / "images" / name)
    _write_bmp(tmp_path / "images" / "d.bmp")
    (tmp_path / "images" / "notes.txt").write_text("ignored")
    touch_image(tmp_path / "labels" / "a_label.tiff")
    touch_image(tmp_path / "labels" / "b_label.tif")
    touch_image(tmp_path / "labels" / "d_label.png")
    entries = read_cellseg(tmp_path, n_folds=2)
    by_name = {e["name"]: e for e in entries}
    assert sorted(by_name) == ["a", "b", "c", "d"]
    assert by_name["a"]["label"] == str(tmp_path / "labels" / "a_label.tiff")
    assert by_name["b"]["label"].endswith("b_label.tif") and by_name["d"]["label"].endswith("d_label.png")
    assert "label" not in by_name["c"]  # unlabelled
    assert by_name["c"]["image"] == str(tmp_path / "images" / "c.tiff")
    assert sorted(e["fold"] for e in entries) == [0, 0, 1, 1]


def _write_bmp(path: Path) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, np.zeros((4, 4, 3), np.uint8))


def test_read_cellseg_errors(tmp_path):
    with pytest.raises(InputError, match="no images/ folder"):
        read_cellseg(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        read_cellseg(tmp_path)
    with pytest.raises(InputError, match="folder not found"):
        read_cellseg(tmp_path / "missing")


# ---------------------------------------------------------------- CTC


def make_ctc_2d(root: Path) -> None:
    for t in range(4):
        touch_image(root / "01" / f"t{t:03d}.tif")
        touch_image(root / "01_GT" / "TRA" / f"man_track{t:03d}.tif")
    touch_image(root / "01_GT" / "SEG" / "man_seg001.tif")
    touch_image(root / "01_ST" / "SEG" / "man_seg001.tif")  # GT exists: ST ignored
    touch_image(root / "01_ST" / "SEG" / "man_seg002.tif")  # no GT: ST used
    (root / "01_GT" / "TRA" / "man_track.txt").write_text("1 0 3 0\n2 2 3 1\n\n3 2 3 1\n")
    for t in range(2):
        touch_image(root / "02" / f"t{t:04d}.tif")  # 4-digit frame numbers
    touch_image(root / "02_GT" / "SEG" / "man_seg0001.tif")


def test_read_ctc_2d(tmp_path):
    make_ctc_2d(tmp_path)
    entries = read_ctc(tmp_path)
    by_name = {e["name"]: e for e in entries}
    assert sorted(by_name) == ["01_t000", "01_t001", "01_t002", "01_t003", "02_t000", "02_t001"]
    assert by_name["01_t001"]["label"] == str(tmp_path / "01_GT" / "SEG" / "man_seg001.tif")
    assert by_name["01_t001"]["label_source"] == "GT"
    assert by_name["01_t002"]["label"] == str(tmp_path / "01_ST" / "SEG" / "man_seg002.tif")
    assert by_name["01_t002"]["label_source"] == "ST"
    assert "label" not in by_name["01_t000"] and "label" not in by_name["01_t003"]
    assert by_name["01_t003"]["tra"] == str(tmp_path / "01_GT" / "TRA" / "man_track003.tif")
    assert "tra" not in by_name["02_t000"]
    assert by_name["02_t001"]["frame"] == 1 and by_name["02_t001"]["sequence"] == "02"
    assert by_name["02_t001"]["image"] == str(tmp_path / "02" / "t0001.tif") and "label" in by_name["02_t001"]
    assert all(0 <= e["fold"] < 5 for e in entries)


def test_read_ctc_without_silver_and_sequence_choice(tmp_path):
    make_ctc_2d(tmp_path)
    entries = read_ctc(tmp_path, sequences=["01"], silver=False)
    labelled = [e["name"] for e in entries if "label" in e]
    assert labelled == ["01_t001"] and len(entries) == 4
    assert len(read_ctc(tmp_path, sequences=[2])) == 2
    with pytest.raises(InputError, match="sequence.*03 not found"):
        read_ctc(tmp_path, sequences=["03"])


def test_read_ctc_3d_full_and_slice_labels(tmp_path):
    for t in range(3):
        touch_image(tmp_path / "01" / f"t{t:03d}.tif", shape=(5, 6, 8))
    touch_image(tmp_path / "01_GT" / "SEG" / "man_seg000.tif", shape=(5, 6, 8))
    touch_image(tmp_path / "01_GT" / "SEG" / "man_seg_000_002.tif")  # covered by the full mask
    touch_image(tmp_path / "01_GT" / "SEG" / "man_seg_001_003.tif")
    touch_image(tmp_path / "01_GT" / "SEG" / "man_seg_002_001.tif")
    touch_image(tmp_path / "01_GT" / "SEG" / "man_seg_002_004.tif")
    entries = read_ctc(tmp_path)
    by_name = {e["name"]: e for e in entries}
    assert sorted(by_name) == ["01_t000", "01_t001", "01_t002_z001", "01_t002_z004"]
    assert by_name["01_t000"]["label"].endswith("man_seg000.tif") and "label_slice" not in by_name["01_t000"]
    assert by_name["01_t001"]["label_slice"] == 3 and by_name["01_t001"]["label"].endswith("man_seg_001_003.tif")
    assert by_name["01_t002_z004"]["label_slice"] == 4 and by_name["01_t002_z004"]["frame"] == 2


def test_read_ctc_errors(tmp_path):
    with pytest.raises(InputError, match="no sequence folders"):
        read_ctc(tmp_path)
    (tmp_path / "01").mkdir()
    with pytest.raises(InputError, match=r"no frames \(tNNN.tif\)"):
        read_ctc(tmp_path)


def test_read_ctc_tracks(tmp_path):
    make_ctc_2d(tmp_path)
    tracks = read_ctc_tracks(tmp_path / "01_GT" / "TRA" / "man_track.txt")
    assert tracks == [(1, 0, 3, 0), (2, 2, 3, 1), (3, 2, 3, 1)]


@pytest.mark.parametrize("bad_line", ["1 0 3", "1 0 x 0", "1 5 3 0", "1 0 3 0 9", "-1 0 3 0"])
def test_read_ctc_tracks_malformed(tmp_path, bad_line):
    path = tmp_path / "man_track.txt"
    path.write_text(f"1 0 3 0\n{bad_line}\n")
    with pytest.raises(InputError, match="man_track.txt: line 2: expected 'L B E P'"):
        read_ctc_tracks(path)


# ---------------------------------------------------------------- COCO


def make_coco(root: Path, labels: np.ndarray, dict_annotations: bool = False) -> Path:
    """Image 1 with polygon annotations, image 2 with RLE ones, image 3 unannotated."""
    height, width = labels.shape
    images_dir = root / "images"
    for name in ("a.png", "b.png", "c.png"):
        write_png(images_dir / name, np.zeros((height, width), np.uint8))
    anns = label_image_to_coco(labels, image_id=1)
    anns += label_image_to_coco(labels, image_id=2, start_ann_id=len(anns) + 1, segmentation="rle")
    images = [{"id": i, "file_name": n, "height": height, "width": width} for i, n in enumerate("abc", 1)]
    for image in images:
        image["file_name"] += ".png"
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cell"}]}
    if dict_annotations:
        coco["annotations"] = {str(a["id"]): a for a in anns}
    path = root / "coco.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("dict_annotations", [False, True])
def test_read_coco_polygons_rle_and_dict_annotations(tmp_path, dict_annotations):
    labels = toy_labels()
    path = make_coco(tmp_path, labels, dict_annotations)
    entries = read_coco(path)
    by_name = {e["name"]: e for e in entries}
    assert sorted(by_name) == ["a", "b", "c"]
    assert by_name["a"]["image"] == str(tmp_path / "images" / "a.png")  # found via <json folder>/images
    assert (by_name["a"]["height"], by_name["a"]["width"], by_name["a"]["image_id"]) == (20, 24, 1)
    assert [len(by_name[n]["annotations"]) for n in "abc"] == [3, 3, 0]
    assert isinstance(by_name["a"]["annotations"][0]["segmentation"], list)
    assert isinstance(by_name["b"]["annotations"][0]["segmentation"], dict)
    for name in "ab":
        rebuilt = coco_to_label_image(by_name[name]["annotations"], 20, 24)
        assert rebuilt.dtype == np.uint16
        np.testing.assert_array_equal(rebuilt, labels)


def test_coco_annotation_fields():
    anns = label_image_to_coco(toy_labels(), image_id=7, start_ann_id=10)
    assert [a["id"] for a in anns] == [10, 11, 12]
    assert anns[0]["bbox"] == [3, 2, 6, 5] and anns[0]["area"] == 30
    assert anns[2]["bbox"] == [2, 12, 4, 5] and anns[2]["area"] == 10
    assert len(anns[2]["segmentation"]) == 2  # two components -> two polygons
    assert all(a["image_id"] == 7 and a["category_id"] == 1 and a["iscrowd"] == 0 for a in anns)
    json.dumps(anns)  # plain JSON types only


def test_coco_uncompressed_rle_and_draw_order():
    square = np.zeros((10, 10), np.uint8)
    square[2:6, 2:6] = 1
    runs, previous, length = [], 0, 0
    for value in square.ravel(order="F"):  # uncompressed RLE counts alternate 0-runs and 1-runs
        if value != previous:
            runs.append(length)
            previous, length = value, 0
        length += 1
    runs.append(length)
    uncompressed = {"segmentation": {"size": [10, 10], "counts": runs}}
    polygon = {"segmentation": [[4.0, 4.0, 8.0, 4.0, 8.0, 8.0, 4.0, 8.0]]}  # pixels 4..7, drawn on top
    labels = coco_to_label_image([uncompressed, polygon], 10, 10)
    expected = np.zeros((10, 10), np.uint16)
    expected[2:6, 2:6] = 1
    expected[4:8, 4:8] = 2
    np.testing.assert_array_equal(labels, expected)


def test_coco_id_key_and_large_ids():
    anns = label_image_to_coco(toy_labels(), image_id=1)
    for ann, source_id in zip(anns, (70000, 5, 9)):
        ann["source_label_id"] = source_id
    labels = coco_to_label_image(anns, 20, 24, id_key="source_label_id")
    assert labels.dtype == np.int32 and sorted(np.unique(labels)) == [0, 5, 9, 70000]


def test_coco_errors(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(InputError, match="bad.json: invalid JSON"):
        load_coco_json(tmp_path / "bad.json")
    (tmp_path / "nokeys.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="missing key.*annotations"):
        load_coco_json(tmp_path / "nokeys.json")
    image = {"id": 1, "file_name": "x.png", "height": 2, "width": 2}
    (tmp_path / "noimage.json").write_text(json.dumps({"images": [image], "annotations": []}))
    with pytest.raises(InputError, match="image file 'x.png' not found"):
        read_coco(tmp_path / "noimage.json")
    with pytest.raises(InputError, match="RLE size"):
        coco_to_label_image([{"segmentation": {"size": [3, 3], "counts": "9"}}], 4, 4)


def test_read_coco_image_root(tmp_path):
    path = make_coco(tmp_path / "ann", toy_labels())
    moved = tmp_path / "pictures"
    (tmp_path / "ann" / "images").rename(moved)
    entries = read_coco(path, image_root=moved)
    assert {e["image"] for e in entries} == {str(moved / f"{n}.png") for n in "abc"}


# ---------------------------------------------------------------- LightMyCells


def make_lightmycells(root: Path) -> None:
    study1, study2 = root / "Study_1", root / "Study_10"
    for z in (0, 2, 10):
        touch_image(study1 / f"image_1_BF_z{z}.ome.tiff")
    touch_image(study1 / "image_1_Nucleus.ome.tiff")
    touch_image(study1 / "image_1_Actin.ome.tiff")
    touch_image(study1 / "image_2_BF_z0.ome.tiff")
    touch_image(study1 / "image_2_Mitochondria.ome.tiff")  # image 2 has no Nucleus
    touch_image(study2 / "image_3_PC_z1.ome.tiff")
    touch_image(study2 / "image_3_Nucleus.ome.tiff")


def test_read_lightmycells(tmp_path):
    make_lightmycells(tmp_path)
    entries = read_lightmycells(tmp_path)
    assert [e["name"] for e in entries] == ["Study_1_image_1", "Study_1_image_2", "Study_10_image_3"]
    first = entries[0]
    assert first["z"] == [0, 2, 10] and first["modality"] == "BF" and first["study"] == "Study_1"
    assert first["image"] == [str(tmp_path / "Study_1" / f"image_1_BF_z{z}.ome.tiff") for z in (0, 2, 10)]
    assert sorted(first["targets"]) == ["Actin", "Nucleus"] and "label" not in first
    assert entries[2]["modality"] == "PC"


def test_read_lightmycells_organelle_filter(tmp_path):
    make_lightmycells(tmp_path)
    nucleus = read_lightmycells(tmp_path, organelle="Nucleus")
    assert [e["name"] for e in nucleus] == ["Study_1_image_1", "Study_10_image_3"]
    assert nucleus[0]["label"] == str(tmp_path / "Study_1" / "image_1_Nucleus.ome.tiff")
    bf = read_lightmycells(tmp_path, organelle="Nucleus", modality="BF")
    assert [e["name"] for e in bf] == ["Study_1_image_1"]
    with pytest.raises(InputError, match="no LightMyCells images found for organelle=Tubulin"):
        read_lightmycells(tmp_path, organelle="Tubulin")
    with pytest.raises(InputError, match="unknown organelle 'DNA'"):
        read_lightmycells(tmp_path, organelle="DNA")
    with pytest.raises(InputError, match="no Study_N folders"):
        read_lightmycells(tmp_path / "Study_1")


# ---------------------------------------------------------------- ISL


def make_isl_field(folder: Path, with_labels: bool = True) -> None:
    for name in ("BRIGHTFIELD_z0", "BRIGHTFIELD_z1", "BRIGHTFIELD_z10", "PHASE_CONTRAST"):
        touch_image(folder / f"input_{name}.tif")
    touch_image(folder / "target_DAPI.tif")
    touch_image(folder / "target_maxproj_MAP2_CONFOCAL.png")
    if with_labels:
        touch_image(folder / "label_nuclei.tif")
    (folder / "README.txt").write_text("ignored")


def test_read_isl_single_field(tmp_path):
    make_isl_field(tmp_path)
    (entry,) = read_labelfree_fields(tmp_path)
    assert entry["name"] == tmp_path.name
    assert list(entry["inputs"]) == ["BRIGHTFIELD_z0", "BRIGHTFIELD_z1", "BRIGHTFIELD_z10", "PHASE_CONTRAST"]
    assert entry["inputs"]["PHASE_CONTRAST"] == str(tmp_path / "input_PHASE_CONTRAST.tif")
    assert entry["targets"] == {
        "DAPI": str(tmp_path / "target_DAPI.tif"),
        "maxproj_MAP2_CONFOCAL": str(tmp_path / "target_maxproj_MAP2_CONFOCAL.png"),
    }
    assert entry["labels"] == {"nuclei": str(tmp_path / "label_nuclei.tif")}


def test_read_isl_multi_field(tmp_path):
    make_isl_field(tmp_path / "field_b", with_labels=False)
    make_isl_field(tmp_path / "field_a")
    (tmp_path / "empty_folder").mkdir()
    entries = read_labelfree_fields(tmp_path, n_folds=2)
    assert [e["name"] for e in entries] == ["field_a", "field_b"]
    assert entries[1]["labels"] == {} and len(entries[1]["targets"]) == 2
    assert sorted(e["fold"] for e in entries) == [0, 1]
    with pytest.raises(InputError, match="not a label-free fields"):
        read_labelfree_fields(tmp_path / "empty_folder")


def test_select_channels():
    names = ["BRIGHTFIELD_z0", "BRIGHTFIELD_z1", "BRIGHTFIELD_z10", "PHASE_CONTRAST"]
    chosen = select_channels(names, ["brightfield_z1", "phase", "Z10"])
    assert chosen == ["BRIGHTFIELD_z1", "PHASE_CONTRAST", "BRIGHTFIELD_z10"]
    with pytest.raises(InputError, match="'DIC' matches no input plane; available: BRIGHTFIELD_z0"):
        select_channels(names, ["DIC"])
    with pytest.raises(InputError, match="matches several"):
        select_channels(names, ["BRIGHTFIELD"])


# ---------------------------------------------------------------- writers: each layout's writer feeds its reader


def _field(seed: int, shape=(24, 20)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    labels[2:8, 3:9], labels[12:20, 10:18] = 1, 2
    return rng.integers(0, 4000, shape).astype(np.uint16), labels


def test_cellseg_writer_round_trips_through_its_reader(tmp_path):
    from cellzoo.io.layouts import write_cellseg_item

    image, labels = _field(0)
    write_cellseg_item(tmp_path, "a", image, labels)
    write_cellseg_item(tmp_path, "b", np.dstack([image.astype(np.uint8)] * 3), None, ".png")
    a, b = read_cellseg(tmp_path, n_folds=1)
    assert (a["name"], b["name"], "label" in b) == ("a", "b", False)
    assert np.array_equal(read_image(a["image"])[0], image) and np.array_equal(read_image(a["label"])[0], labels)
    assert read_image(b["image"])[0].shape == (24, 20, 3)


def test_ctc_writer_round_trips_through_its_reader(tmp_path):
    from cellzoo.io.layouts import tra_markers, write_ctc_frame, write_ctc_tracks

    image, labels = _field(1)
    for t in range(3):
        write_ctc_frame(tmp_path, "01", t, image, "YX", gold=labels if t == 0 else None, silver=labels,
                        markers=tra_markers(labels))
    write_ctc_tracks(tmp_path, "01", [(1, 0, 2, 0), (2, 1, 2, 1)])
    entries = read_ctc(tmp_path, n_folds=1)
    assert [(e["name"], e["label_source"]) for e in entries] == [("01_t000", "GT"), ("01_t001", "ST"), ("01_t002", "ST")]
    assert read_ctc_tracks(tmp_path / "01_GT" / "TRA" / "man_track.txt") == [(1, 0, 2, 0), (2, 1, 2, 1)]
    markers = read_image(entries[0]["tra"])[0]
    assert set(np.unique(markers)) == {0, 1, 2} and (markers > 0).sum() < (labels > 0).sum()  # inside the cells


def test_coco_writer_round_trips_through_its_reader(tmp_path):
    from cellzoo.io.coco import write_coco_json
    from cellzoo.io.layouts import write_coco_image

    image, labels = _field(2)
    record = write_coco_image(tmp_path, 5, "x.tif", image)
    write_coco_json(tmp_path / "annotations.json", [record], label_image_to_coco(labels, 5), description="test")
    (entry,) = read_coco(tmp_path / "annotations.json", n_folds=1)
    assert (entry["name"], entry["height"], entry["width"], len(entry["annotations"])) == ("x", 24, 20, 2)
    assert np.array_equal(coco_to_label_image(entry["annotations"], 24, 20), labels)
    assert json.loads((tmp_path / "annotations.json").read_text())["info"] == {"description": "test"}


def test_lightmycells_writer_round_trips_and_is_byte_identical_with_a_seed(tmp_path):
    from cellzoo.io.layouts import write_lightmycells_image

    image, _ = _field(3)
    for root in (tmp_path / "a", tmp_path / "b"):
        write_lightmycells_image(root, "Study_2", 7, "BF", [image, image + 1], {"Actin": image + 2}, uuid_seed=4)
    (entry,) = read_lightmycells(tmp_path / "a", organelle="Actin", n_folds=1)
    assert (entry["name"], entry["modality"], entry["z"]) == ("Study_2_image_7", "BF", [0, 1])
    assert np.array_equal(read_image(entry["label"])[0], image + 2)
    first, second = (sorted((root / "Study_2").iterdir()) for root in (tmp_path / "a", tmp_path / "b"))
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    with pytest.raises(InputError, match="unknown organelle 'DNA'"):
        write_lightmycells_image(tmp_path / "c", "Study_1", 1, "BF", [image], {"DNA": image})


def test_labelfree_field_writer_round_trips_through_its_reader(tmp_path):
    from cellzoo.io.layouts import write_labelfree_field

    image, labels = _field(4)
    write_labelfree_field(tmp_path, "field_1", {"PLANE_z0": image, "PLANE_z1": image}, {"DAPI": image + 1},
                          {"nuclei": labels})
    (entry,) = read_labelfree_fields(tmp_path, n_folds=1)
    assert (entry["name"], list(entry["inputs"]), list(entry["targets"]), list(entry["labels"])) == (
        "field_1", ["PLANE_z0", "PLANE_z1"], ["DAPI"], ["nuclei"])
    assert np.array_equal(read_image(entry["labels"]["nuclei"])[0], labels)
