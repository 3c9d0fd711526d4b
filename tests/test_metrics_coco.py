"""Tests for cellzoo.metrics.coco: hand-computed COCO AP values and agreement with pycocotools' summarize()."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellzoo.errors import InputError
from cellzoo.metrics import PROTOCOLS, coco_evaluate, labels_to_coco_results

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
COCO_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def squares_label(n_rows: int, n_cols: int, size: int, gap: int, shape: tuple[int, int]) -> np.ndarray:
    """Label image with a grid of size x size squares, ids 1.. in row-major order."""
    lab = np.zeros(shape, np.int32)
    k = 0
    for r in range(n_rows):
        for c in range(n_cols):
            k += 1
            y, x = r * (size + gap), c * (size + gap)
            lab[y : y + size, x : x + size] = k
    return lab


def gt_from_labels(labels: list[np.ndarray], polygons: bool = False) -> dict:
    """COCO ground truth dict; square objects can be written as polygons (pixel-corner coordinates)."""
    images, anns = [], []
    for img_id, lab in enumerate(labels, start=1):
        images.append({"id": img_id, "height": lab.shape[0], "width": lab.shape[1], "file_name": f"{img_id}.tif"})
        for res in labels_to_coco_results(lab, img_id):
            ann = {k: res[k] for k in ("image_id", "category_id", "segmentation", "bbox", "area")}
            if polygons and len(anns) % 2 == 0:  # every other object as a polygon
                x, y, w, h = res["bbox"]
                ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            anns.append({**ann, "id": len(anns) + 1, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cell"}]}


def reference_stats(gt: dict, dets: list[dict], iou_type: str = "segm") -> np.ndarray:
    """pycocotools used directly, with its default (COCO) parameters."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def without_bbox(dets: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "bbox"} for d in dets]


def assert_matches_summarize(res: dict, stats: np.ndarray) -> None:
    assert [res[k] for k in COCO_KEYS] == pytest.approx(list(stats[:6]), abs=1e-12)
    assert res["AR"] == pytest.approx(stats[8], abs=1e-12)


# ---------------------------------------------------------------- hand-computed values


def test_perfect_predictions_give_ap_one_with_polygons_and_rle():
    lab = squares_label(3, 4, 10, 5, (64, 64))
    gt = gt_from_labels([lab], polygons=True)
    assert isinstance(gt["annotations"][0]["segmentation"], list)
    res = coco_evaluate(gt, labels_to_coco_results(lab, 1))
    assert res["AP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0)
    assert res["APs"] == pytest.approx(1.0)
    assert res["APm"] == res["APl"] == -1.0  # no medium or large objects: undefined
    assert res["AR"] == pytest.approx(1.0)
    # explicit max_dets overrides the preset: 6 of 12 detections count -> 51 of 101 recall points
    assert coco_evaluate(gt, labels_to_coco_results(lab, 1), max_dets=[1, 6])["AP"] == pytest.approx(51 / 101)


def test_half_of_objects_found_gives_51_of_101_recall_points():
    # 8 gt, 4 exact predictions: precision 1 up to recall 0.5, nothing beyond. COCO averages the
    # interpolated precision at 101 recall points 0, 0.01, ..., 1; points 0..0.50 (51 of them) score 1.
    lab = squares_label(2, 4, 10, 5, (64, 64))
    gt = gt_from_labels([lab])
    dets = labels_to_coco_results(np.where(lab <= 4, lab, 0), 1)
    res = coco_evaluate(gt, dets)
    assert res["AP"] == pytest.approx(51 / 101)
    assert res["AP50"] == pytest.approx(51 / 101)
    assert res["AR"] == pytest.approx(0.5)
    # extra false positives scored below every true positive do not change AP
    fp_lab = np.zeros((64, 64), np.int32)
    fp_lab[50:60, 50:60] = 1  # overlaps no gt object
    fp = labels_to_coco_results(fp_lab, 1, scores=[0.01])
    assert coco_evaluate(gt, dets + fp)["AP"] == pytest.approx(51 / 101)


def test_false_positive_ranked_first_gives_two_thirds():
    # 2 gt; ranked detections FP (0.9), TP (0.8), TP (0.7): precision 0, 1/2, 2/3 at recall 0, 1/2, 1.
    # Interpolated precision (max to the right) is 2/3 at every recall point -> AP = 2/3.
    lab = squares_label(1, 2, 10, 5, (40, 40))
    gt = gt_from_labels([lab])
    tps = labels_to_coco_results(lab, 1, scores={1: 0.8, 2: 0.7})
    fp_lab = np.zeros((40, 40), np.int32)
    fp_lab[30:38, 30:38] = 1
    fps = labels_to_coco_results(fp_lab, 1, scores=[0.9])
    res = coco_evaluate(gt, fps + tps)
    assert res["AP"] == pytest.approx(2 / 3)
    assert res["AP75"] == pytest.approx(2 / 3)


def test_livecell_protocol_counts_more_than_100_detections():
    lab = squares_label(15, 20, 4, 2, (100, 130))  # 300 objects of 16 px
    gt = gt_from_labels([lab])
    dets = labels_to_coco_results(lab, 1)
    livecell = coco_evaluate(gt, dets, protocol="livecell")
    assert livecell["AP"] == pytest.approx(1.0)
    assert livecell["AR"] == pytest.approx(1.0)
    coco = coco_evaluate(gt, dets, protocol="coco")
    # only 100 of 300 detections count: recall 1/3, precision 1 at recall points 0..0.33 (34 of 101)
    assert coco["AR"] == pytest.approx(1 / 3)
    assert coco["AP"] == pytest.approx(34 / 101)


def test_livecell_area_ranges_differ_from_coco():
    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:30] = 1  # 400 px: "small" for COCO (< 32^2), "medium" for LIVECell (18^2..31^2)
    gt = gt_from_labels([lab])
    dets = labels_to_coco_results(lab, 1)
    coco = coco_evaluate(gt, dets)
    livecell = coco_evaluate(gt, dets, protocol="livecell")
    assert (coco["APs"], coco["APm"]) == (pytest.approx(1.0), -1.0)
    assert (livecell["APs"], livecell["APm"]) == (-1.0, pytest.approx(1.0))
    assert PROTOCOLS["livecell"]["area_ranges"]["medium"] == [18**2, 31**2]


def test_empty_predictions_score_zero():
    lab = squares_label(2, 2, 10, 5, (40, 40))
    res = coco_evaluate(gt_from_labels([lab]), [])
    assert res == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": 0.0, "APm": -1.0, "APl": -1.0, "AR": 0.0}


def test_livecell_style_annotations_dict_and_missing_keys(tmp_path):
    lab = squares_label(3, 3, 8, 3, (40, 40))
    gt = gt_from_labels([lab], polygons=True)
    rng = np.random.default_rng(3)
    dets = labels_to_coco_results(np.where(lab % 3 == 0, 0, lab), 1, scores=rng.random(6))
    expected = coco_evaluate(gt, dets)
    assert 0 < expected["AP"] < 1
    quirky = copy.deepcopy(gt)
    quirky["annotations"] = {
        str(a["id"]): {k: v for k, v in a.items() if k not in ("iscrowd", "area", "bbox", "id")}
        for a in quirky["annotations"]
    }
    assert coco_evaluate(quirky, dets) == expected
    assert coco_evaluate(quirky, dets, iou_type="bbox") == coco_evaluate(gt, dets, iou_type="bbox")
    # json paths work for both arguments
    (tmp_path / "gt.json").write_text(json.dumps(quirky))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert coco_evaluate(tmp_path / "gt.json", str(tmp_path / "dets.json")) == expected


# ---------------------------------------------------------------- agreement with summarize()


def random_scene(rng: np.random.Generator, shape=(256, 256), n=30) -> np.ndarray:
    """Random non-overlapping-ish discs of many sizes (small, medium and large COCO objects)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        r = rng.choice([3, 8, 25, 60], p=[0.4, 0.3, 0.2, 0.1])
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2) & (lab == 0)] = k
    return lab


def perturbed_detections(lab: np.ndarray, image_id: int, rng: np.random.Generator) -> list[dict]:
    pred = np.zeros_like(lab)
    dy, dx = rng.integers(-3, 4, size=2)
    pred[max(dy, 0) : lab.shape[0] + min(dy, 0), max(dx, 0) : lab.shape[1] + min(dx, 0)] = lab[
        max(-dy, 0) : lab.shape[0] + min(-dy, 0), max(-dx, 0) : lab.shape[1] + min(-dx, 0)
    ]
    ids = np.unique(pred)[1:]
    pred[np.isin(pred, rng.choice(ids, size=len(ids) // 5, replace=False))] = 0  # misses
    pred[5:20, 5:20] = 10_000  # a false positive (or a poor match)
    return labels_to_coco_results(pred, image_id, scores=rng.random(len(np.unique(pred)) - 1))


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_coco_protocol_equals_pycocotools_summarize_on_random_scenes(iou_type):
    rng = np.random.default_rng(11)
    labels = [random_scene(rng) for _ in range(3)]
    gt = gt_from_labels(labels)
    dets = [d for i, lab in enumerate(labels, start=1) for d in perturbed_detections(lab, i, rng)]
    ref_dets = without_bbox(dets) if iou_type == "segm" else dets
    stats = reference_stats(gt, ref_dets, iou_type)
    assert 0.1 < stats[0] < 0.9 and min(stats[3:6]) > 0  # a non-trivial case with every size class
    assert_matches_summarize(coco_evaluate(gt, dets, iou_type=iou_type), stats)


def test_real_coco_derived_annotations():
    import tifffile

    gt_path = REALDATA / "coco_derived" / "annotations_rle.json"
    if not gt_path.exists():
        pytest.skip(f"{gt_path} not found")
    gt = json.loads(gt_path.read_text())
    labels = {im["id"]: tifffile.imread(REALDATA / im["label_file"]) for im in gt["images"]}
    exact = [d for i, lab in labels.items() for d in labels_to_coco_results(lab, i)]
    assert coco_evaluate(gt_path, exact)["AP"] == pytest.approx(1.0)
    poly_path = REALDATA / "coco_derived" / "annotations_polygons_plus_rle.json"
    assert coco_evaluate(poly_path, exact)["AP"] == pytest.approx(1.0)

    rng = np.random.default_rng(5)
    dets = [d for i, lab in labels.items() for d in perturbed_detections(lab.astype(np.int32), i, rng)]
    stats = reference_stats(gt, without_bbox(dets))
    assert 0.05 < stats[0] < 0.95
    assert_matches_summarize(coco_evaluate(gt_path, dets), stats)


# ---------------------------------------------------------------- labels_to_coco_results


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode vs numpy 2
def test_labels_to_coco_results_round_trip():
    lab = np.zeros((30, 40), np.uint16)
    lab[2:7, 3:10] = 9  # bbox x=3, y=2, w=7, h=5
    lab[20:30, 30:40] = 4
    lab[0, 39] = 4  # a second piece of instance 4
    res = labels_to_coco_results(lab, image_id=7, scores={4: 0.25, 9: 0.5}, category_id=3)
    assert [r["score"] for r in res] == [0.25, 0.5]  # ascending label id
    assert res[1]["bbox"] == [3.0, 2.0, 7.0, 5.0]
    assert res[1]["area"] == 35.0
    for r, i in zip(res, (4, 9)):
        np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]), lab == i)
        assert (r["image_id"], r["category_id"]) == (7, 3)
    json.dumps(res)  # serialisable as a COCO results file
    assert [r["score"] for r in labels_to_coco_results(lab, 1)] == [1.0, 1.0]
    assert labels_to_coco_results(np.zeros((5, 5), np.int32), 1) == []


def test_bad_inputs_raise_input_error():
    lab = squares_label(1, 2, 5, 2, (20, 20))
    gt = gt_from_labels([lab])
    with pytest.raises(InputError):
        labels_to_coco_results(np.zeros((4, 4, 4), np.int32), 1)
    with pytest.raises(InputError):
        labels_to_coco_results(lab, 1, scores=[0.5])
    with pytest.raises(InputError):
        coco_evaluate(gt, labels_to_coco_results(lab, 99))  # unknown image id
    with pytest.raises(InputError):
        coco_evaluate(gt, [], protocol="nope")
    with pytest.raises(InputError):
        coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "segmentation": {}}])  # no score


def test_label_pairs_coco_ap_scores_segmenter_outputs():
    """Box and mask AP of label images: 1 when every cell is found, 51/101 when half are; without scores
    the instances rank in label order, with scores as given."""
    from cellzoo.metrics import label_pairs_coco_ap

    gt = squares_label(2, 2, 10, 6, (40, 40))
    assert label_pairs_coco_ap([(gt, gt)]) == {"box_ap": 1.0, "box_ap50": 1.0, "mask_ap": 1.0, "mask_ap50": 1.0}
    half = np.where(gt <= 2, gt, 0)
    assert label_pairs_coco_ap([(gt, half)])["mask_ap"] == pytest.approx(51 / 101)
    two = squares_label(1, 2, 10, 5, (40, 40))
    with_fp = two.copy()
    with_fp[30:38, 30:38] = 3  # a false positive, last in label order
    assert label_pairs_coco_ap([(two, with_fp)])["box_ap"] == pytest.approx(1.0)  # ranked after both hits
    scored = label_pairs_coco_ap([(two, with_fp)], scores=[{1: 0.8, 2: 0.7, 3: 0.9}])
    assert scored["box_ap"] == pytest.approx(2 / 3) and scored["mask_ap50"] == pytest.approx(2 / 3)  # ranked first
    assert label_pairs_coco_ap([(gt, np.zeros_like(gt))])["box_ap"] == 0.0


def test_instance_report_holds_f1_and_coco_ap(tmp_path):
    from cellzoo.io import write_tiff
    from cellzoo.metrics.folders import write_instance_report

    gt = squares_label(2, 2, 10, 6, (40, 40))
    write_tiff(tmp_path / "gt" / "a_label.tiff", gt, "YX")
    write_tiff(tmp_path / "pred" / "a_label.tiff", np.where(gt <= 2, gt, 0), "YX")
    report = write_instance_report(tmp_path / "pred", tmp_path / "gt", tmp_path / "m.json")
    assert report["f1"] == pytest.approx(2 / 3) and report["mask_ap"] == pytest.approx(51 / 101)
    assert json.loads((tmp_path / "m.json").read_text())["box_ap"] == pytest.approx(51 / 101)


def _one_square_gt() -> dict:
    square = [[2, 2, 8, 2, 8, 8, 2, 8]]
    return {"images": [{"id": 1, "height": 20, "width": 20, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "cell"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 6, 6], "area": 36,
                             "iscrowd": 0, "segmentation": square}]}


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_polygon_results_score_as_their_masks(iou_type):
    gt = _one_square_gt()
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": gt["annotations"][0]["segmentation"]}]
    assert coco_evaluate(gt, results, iou_type=iou_type)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"score": "high"}, "score must be a finite number"),
    ({"score": float("nan")}, "score must be a finite number"),
    ({"score": True}, "score must be a finite number"),
    ({"bbox": "x"}, "bbox must be"),
    ({"bbox": [1, 2, -3, 4]}, "bbox must be"),
    ({"segmentation": []}, "empty segmentation"),
])
def test_malformed_results_get_one_line(change, message):
    result = {"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [2, 2, 6, 6],
              "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]], **change}
    with pytest.raises(InputError, match=message):
        coco_evaluate(_one_square_gt(), [result], iou_type="segm")
