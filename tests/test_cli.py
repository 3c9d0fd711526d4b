"""The `cellzoo` command: output contracts and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from cellzoo.cli import EXIT_BAD_INPUT, main
from cellzoo.metrics import labels_to_coco_results


def _labels(shape=(64, 64), boxes=((5, 5, 20, 20), (30, 30, 50, 45))) -> np.ndarray:
    labels = np.zeros(shape, np.uint16)
    for i, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = i
    return labels


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)
    return path


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == EXIT_BAD_INPUT
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def label_dirs(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt / "img1_label.tiff", _labels())
    _write(gt / "img2_label.tiff", _labels(boxes=((2, 2, 12, 12),)))
    # img1: one cell exact, one cell missed; img2: exact plus one false positive
    _write(pred / "img1.tif", _labels(boxes=((5, 5, 20, 20),)))
    _write(pred / "img2.tif", _labels(boxes=((2, 2, 12, 12), (40, 40, 50, 50))))
    return pred, gt


def test_evaluate_instance_prints_scores(label_dirs, capsys, tmp_path):
    pred, gt = label_dirs
    out_json = tmp_path / "scores.json"
    code, out, _ = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt), "--json", str(out_json)], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["n_images"] == 2
    # per image: F1 = 2*1/(2*1+0+1) = 2/3 for both images
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert set(result["ap"]) == {f"{t:.2f}" for t in np.arange(0.5, 1.0, 0.05)}
    assert result["ap"]["0.50"] == pytest.approx(0.5)  # tp / (tp + fp + fn) = 1/2 per image
    assert json.loads(out_json.read_text()) == result


def test_evaluate_instance_iou_threshold(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt / "a_label.tiff", _labels(boxes=((0, 0, 10, 10),)))
    _write(pred / "a.tiff", _labels(boxes=((0, 0, 10, 8),)))  # IoU = 0.8
    code, out, _ = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt), "--iou", "0.85"], capsys)
    assert code == 0 and json.loads(out)["f1"] == 0.0
    code, out, _ = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt), "--iou", "0.75"], capsys)
    assert code == 0 and json.loads(out)["f1"] == 1.0


def test_evaluate_instance_empty_prediction_is_valid(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _write(gt / "a_label.tiff", _labels())
    _write(pred / "a.tiff", np.zeros((64, 64), np.uint16))
    code, out, _ = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert code == 0
    assert json.loads(out)["recall"] == 0.0


def test_unmatched_stems(label_dirs, capsys):
    pred, gt = label_dirs
    _write(gt / "img3_label.tiff", _labels())
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "unmatched stems", "img3")


def test_missing_folder(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "nope", "not found")


def test_unreadable_file(label_dirs, capsys):
    pred, gt = label_dirs
    (pred / "img2.tif").write_bytes(b"this is not a tiff")
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "img2.tif")


def test_shape_mismatch(label_dirs, capsys):
    pred, gt = label_dirs
    _write(pred / "img2.tif", _labels(shape=(60, 64), boxes=((2, 2, 12, 12),)))
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "img2")


def test_float_labels_rejected(label_dirs, capsys):
    pred, gt = label_dirs
    _write(gt / "img2_label.tiff", _labels().astype(np.float32) + 0.5)
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "img2_label.tiff", "integer")


def test_empty_ground_truth_rejected(label_dirs, capsys):
    pred, gt = label_dirs
    _write(gt / "img1_label.tiff", np.zeros((64, 64), np.uint16))
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "img1_label.tiff", "empty")


def test_wrong_dimensionality(label_dirs, capsys):
    pred, gt = label_dirs
    _write(gt / "img1_label.tiff", np.ones((2, 3, 8, 8, 8), np.uint16))
    code, _, err = run_cli(["evaluate", "instance", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "img1_label.tiff")


def test_evaluate_image(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt_img = rng.random((48, 48)).astype(np.float32)
    _write(tmp_path / "gt" / "a.tif", gt_img)
    _write(tmp_path / "pred" / "a.tif", gt_img)
    code, out, _ = run_cli(["evaluate", "image", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")], capsys)
    assert code == 0
    result = json.loads(out)
    assert {"mae", "mse", "psnr", "ssim", "pcc", "euclidean", "cosine"} <= set(result)
    assert result["mae"] == pytest.approx(0.0, abs=1e-9)
    assert result["pcc"] == pytest.approx(1.0)
    assert result["ssim"] == pytest.approx(1.0)


def test_evaluate_image_nan_rejected(tmp_path, capsys):
    img = np.ones((16, 16), np.float32)
    _write(tmp_path / "gt" / "a.tif", img)
    img = img.copy()
    img[3, 3] = np.nan
    _write(tmp_path / "pred" / "a.tif", img)
    code, _, err = run_cli(["evaluate", "image", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")], capsys)
    assert_one_line_error(code, err, "a.tif", "NaN")


def test_evaluate_coco(tmp_path, capsys):
    labels = _labels()
    gt = {
        "images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.tif"}],
        "categories": [{"id": 1, "name": "cell"}],
        "annotations": [],
    }
    results = labels_to_coco_results(labels, image_id=1)
    for k, res in enumerate(results, start=1):
        x, y, w, h = res["bbox"]
        gt["annotations"].append(
            {"id": k, "image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
             "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
        )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    code, out, _ = run_cli(
        ["evaluate", "coco", "--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json"),
         "--iou-type", "bbox", "--protocol", "livecell"], capsys)
    assert code == 0
    result = json.loads(out)
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(result)
    assert result["AP"] == pytest.approx(1.0)


def test_evaluate_coco_bad_json(tmp_path, capsys):
    (tmp_path / "gt.json").write_text("{not json")
    (tmp_path / "pred.json").write_text("[]")
    code, _, err = run_cli(["evaluate", "coco", "--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json")], capsys)
    assert_one_line_error(code, err, "gt.json", "JSON")


def test_measure_writes_table(tmp_path, capsys):
    labels = _labels()
    image = np.where(labels == 1, 100, np.where(labels == 2, 40, 5)).astype(np.uint16)
    _write(tmp_path / "img.tif", image)
    _write(tmp_path / "lbl.tif", labels)
    out = tmp_path / "cells.csv"
    code, stdout, _ = run_cli(["measure", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lbl.tif"),
                               "--out", str(out)], capsys)
    assert code == 0 and "2 cells" in stdout
    rows = list(csv.DictReader(out.open()))
    assert [int(r["label"]) for r in rows] == [1, 2]
    assert float(rows[0]["area"]) == 15 * 15
    assert float(rows[0]["mean_intensity_0"]) == pytest.approx(100)
    assert float(rows[1]["mean_intensity_0"]) == pytest.approx(40)


def test_measure_shape_mismatch(tmp_path, capsys):
    _write(tmp_path / "img.tif", np.ones((50, 64), np.uint16))
    _write(tmp_path / "lbl.tif", _labels())
    code, _, err = run_cli(["measure", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lbl.tif"),
                            "--out", str(tmp_path / "t.csv")], capsys)
    assert_one_line_error(code, err, "shape")
    assert not (tmp_path / "t.csv").exists()


def test_measure_missing_image(tmp_path, capsys):
    _write(tmp_path / "lbl.tif", _labels())
    code, _, err = run_cli(["measure", "--image", str(tmp_path / "none.tif"), "--labels", str(tmp_path / "lbl.tif"),
                            "--out", str(tmp_path / "t.csv")], capsys)
    assert_one_line_error(code, err, "none.tif", "not found")


def test_synth_and_list(tmp_path, capsys):
    code, out, _ = run_cli(["synth", "--layout", "cellseg", "--n", "2", "--out", str(tmp_path / "d"), "--size", "64,96"],
                           capsys)
    assert code == 0
    images = sorted((tmp_path / "d" / "images").iterdir())
    labels = sorted((tmp_path / "d" / "labels").iterdir())
    assert len(images) == 2 and len(labels) == 2
    assert tifffile.imread(labels[0]).shape == (64, 96)
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0 and "cellseg" in out and "natural-object images: objects" in out


def test_synth_objects_writes_coco_with_four_categories(tmp_path, capsys):
    code, _, _ = run_cli(["synth", "--layout", "objects", "--n", "3", "--out", str(tmp_path / "o"), "--size", "64,64"],
                         capsys)
    assert code == 0
    train = json.loads((tmp_path / "o" / "coco_train.json").read_text())
    assert [c["name"] for c in train["categories"]] == ["ellipse", "rectangle", "triangle", "star"]
    assert len(train["images"]) == 1 and (tmp_path / "o" / "images" / train["images"][0]["file_name"]).is_file()


def test_synth_bad_layout(tmp_path, capsys):
    code, _, err = run_cli(["synth", "--layout", "nope", "--n", "2", "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "--layout")


def test_console_script_exit_code_and_debug(tmp_path):
    """The installed entry point: one line without --debug, a traceback with it."""
    args = [sys.executable, "-m", "cellzoo.cli", "measure", "--image", str(tmp_path / "x.tif"),
            "--labels", str(tmp_path / "y.tif"), "--out", str(tmp_path / "t.csv")]
    plain = subprocess.run(args, capture_output=True, text=True)
    assert plain.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in plain.stderr and "file not found" in plain.stderr
    debug = subprocess.run(args + ["--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_export_bioimageio_refuses_a_missing_checkpoint_and_an_existing_package(tmp_path, capsys):
    code, _, err = run_cli(["export-bioimageio", "isl_segmentation", "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "--checkpoint is required")
    code, _, err = run_cli(["export-bioimageio", "isl_segmentation", "--checkpoint", str(tmp_path / "none.pt"),
                            "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "none.pt", "checkpoint not found")
    (tmp_path / "isl_segmentation").mkdir()
    (tmp_path / "model.pt").write_bytes(b"")
    code, _, err = run_cli(["export-bioimageio", "isl_segmentation", "--checkpoint", str(tmp_path / "model.pt"),
                            "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "already exists", "--overwrite")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_commands(flag, capsys):
    code, out, _ = run_cli([flag], capsys)
    assert code == 0
    for command in ("predict", "study", "benchmark", "evaluate", "package", "synth"):
        assert f"     {command}\n" in out, command
