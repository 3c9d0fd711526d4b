"""The napari widget (cellzoo.napari) in a real viewer, headless (Qt's offscreen platform): predict, edit,
fine-tune, predict again, cancel, bad files; and the plugin's manifest, reader and writer."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt loads: no screen here or in CI

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

napari = pytest.importorskip("napari", reason="the napari extra is not installed (pip install -e '.[napari]')")
if not os.environ.get("DISPLAY"):  # pytest-xvfb sets it when Xvfb is installed; napari's canvas needs OpenGL on X
    pytest.skip("no X server for napari's OpenGL canvas: apt-get install xvfb (pytest-xvfb starts it)",
                allow_module_level=True)

from cellzoo.benchmarks.samples import synthetic_nuclei  # noqa: E402
from cellzoo.errors import InputError  # noqa: E402
from cellzoo.inference.single_image import read_output  # noqa: E402
from cellzoo.interactive import loop  # noqa: E402
from cellzoo.io import read_labels, write_ome_tiff  # noqa: E402
from cellzoo.metrics import evaluate_instances  # noqa: E402
from cellzoo.napari import widget as widget_module  # noqa: E402
from cellzoo.napari.files import get_reader  # noqa: E402

RUN_MS = 240_000  # a prediction or a short fine-tuning on 2 cores, child-process start-up included
# a fine-tuning of a few iterations: mechanics, not a model
FEW_ITERATIONS = {"max_epochs": 2, "samples_per_epoch": 8, "min_iterations": 0, "patience": None}


@pytest.fixture
def sample():
    labelled, _ = synthetic_nuclei(1, 0, seed=5, size=(160, 160))
    return labelled[0]


@pytest.fixture
def errors(monkeypatch):
    """The messages the widget shows as napari error notifications."""
    shown: list[str] = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    monkeypatch.setattr(widget_module, "show_info", lambda message: None)
    return shown


@pytest.fixture
def cellzoo_widget(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = widget_module.CellzooWidget(viewer, work_dir=tmp_path / "work")
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def wait_idle(qtbot, widget, timeout=RUN_MS):
    qtbot.waitUntil(lambda: widget.job is None, timeout=timeout)


def f1(truth: np.ndarray, prediction: np.ndarray) -> float:
    return evaluate_instances([(truth, prediction)], iou=0.5)["f1"]


@pytest.mark.slow
def test_predict_adds_a_labels_layer_with_the_cells_of_the_image(cellzoo_widget, qtbot, sample, errors):
    viewer, widget = cellzoo_widget
    viewer.add_image(sample.image, name="nuclei", scale=(0.5, 0.5))
    widget.image_layer.setCurrentText("nuclei")
    widget.predict()
    assert widget.job is not None and not widget.predict_button.isEnabled()  # running in its own process
    wait_idle(qtbot, widget)
    assert errors == []
    layer = viewer.layers["mediar_cellseg labels"]
    truth = sample.labels
    found = len(np.unique(layer.data[layer.data > 0]))
    assert abs(found - len(np.unique(truth[truth > 0]))) <= 2 and f1(truth, np.asarray(layer.data)) > 0.8
    assert tuple(layer.scale) == (0.5, 0.5)  # overlays its image
    assert widget.table.rowCount() == found and len(widget.table_rows) == found
    saved = widget.save_table(Path(widget.work) / "cells.csv")
    assert saved is not None and len(saved.read_text().strip().splitlines()) == found + 1


@pytest.mark.slow
def test_an_edit_and_a_fine_tuning_write_a_checkpoint_and_the_annotations_and_change_the_prediction(
        cellzoo_widget, qtbot, sample, tmp_path, errors):
    viewer, widget = cellzoo_widget
    viewer.add_image(sample.image, name="nuclei")
    widget.image_layer.setCurrentText("nuclei")
    widget.predict()
    wait_idle(qtbot, widget)
    layer = viewer.layers["mediar_cellseg labels"]
    before = np.asarray(layer.data).copy()
    layer.data = sample.labels.astype(np.int32)  # the user's correction: every cell as it should be
    folder = tmp_path / "session"
    widget.folder_edit.setText(str(folder))
    widget.add_annotation()
    widget.fine_tune(settings=FEW_ITERATIONS)
    qtbot.waitUntil(lambda: widget.job is None and widget.checkpoint is not None, timeout=RUN_MS)
    wait_idle(qtbot, widget)  # the prediction that follows a fine-tuning
    assert errors == []
    assert widget.checkpoint == folder / "model" / "model.pt" and widget.checkpoint.is_file()
    assert np.array_equal(read_labels(folder / "data" / "labels" / "nuclei_label.tiff"), sample.labels)
    assert (folder / "data" / "images" / "nuclei.tif").is_file()
    command = (folder / "train_command.txt").read_text()
    assert command.startswith("python -m monai.bundle run") and str(folder / "data") in command
    from cellzoo.engines import read_curve

    rows = read_curve(folder / "model" / "training_curve.csv")
    assert len([r for r in rows if r["val_metric"] is not None]) == 2  # validated each epoch; plotted live
    assert len(widget.curve_axes.lines) == 1 and len(widget.curve_axes.lines[0].get_xdata()) == 2
    after = np.asarray(viewer.layers["mediar_cellseg labels"].data)
    assert not np.array_equal(after, before)  # predicted again with the fine-tuned weights


@pytest.mark.slow
def test_cancel_stops_a_fine_tuning(cellzoo_widget, qtbot, sample, tmp_path, errors):
    viewer, widget = cellzoo_widget
    viewer.add_image(sample.image, name="nuclei")
    viewer.add_labels(sample.labels.astype(np.int32), name="corrected")
    widget.image_layer.setCurrentText("nuclei")
    widget.labels_layer.setCurrentText("corrected")
    widget.folder_edit.setText(str(tmp_path / "session"))
    widget.fine_tune(settings={"max_epochs": 1000, "patience": None})
    job = widget.job
    assert job is not None
    widget.cancel()
    wait_idle(qtbot, widget, timeout=30_000)
    assert not job.run.running() and widget.status.text() == "cancelled" and errors == []
    assert not (tmp_path / "session" / "model" / "model.pt").exists()


def test_a_bad_file_gives_a_notification_not_a_traceback(cellzoo_widget, tmp_path, errors):
    viewer, widget = cellzoo_widget
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    assert widget.open(bad) is None
    assert len(errors) == 1 and "cannot read image" in errors[0] and len(viewer.layers) == 0
    widget.predict()  # no image layer yet
    assert "choose a layer first" in errors[-1] and widget.job is None


def test_opening_keeps_the_pixel_size_and_saving_writes_it_back(cellzoo_widget, tmp_path, sample, monkeypatch):
    from cellzoo.io.physical import read_physical_size_um

    viewer, widget = cellzoo_widget
    path = write_ome_tiff(tmp_path / "nuclei.ome.tiff", sample.image, "YX", (0.65, 0.65))
    layer = widget.open(path)
    assert tuple(layer.scale) == (0.65, 0.65) and layer.data.shape == sample.image.shape
    viewer.add_labels(sample.labels.astype(np.int32), name="cells", scale=layer.scale)
    widget.labels_layer.setCurrentText("cells")
    out = widget.save_labels(tmp_path / "cells.ome.tiff")
    assert np.array_equal(read_labels(out), sample.labels) and read_physical_size_um(out) == pytest.approx((0.65, 0.65))
    monkeypatch.setattr(widget, "confirm", lambda question: False)  # the user says no: the file stays
    stamp = out.stat().st_mtime_ns
    assert widget.save_labels(out) is None and out.stat().st_mtime_ns == stamp


def test_annotations_are_never_overwritten_without_asking(tmp_path, sample):
    annotated = {"one": (sample.image, sample.labels)}
    data = loop.save_annotations("mediar_cellseg", annotated, tmp_path)
    with pytest.raises(InputError, match="already holds annotations"):
        loop.save_annotations("mediar_cellseg", {"two": (sample.image, sample.labels)}, tmp_path)
    assert sorted(p.name for p in (data / "images").iterdir()) == ["one.tif"]
    loop.save_annotations("mediar_cellseg", {"two": (sample.image, sample.labels)}, tmp_path, overwrite=True)
    assert sorted(p.name for p in (data / "images").iterdir()) == ["two.tif"]  # replaced as a whole
    with pytest.raises(InputError, match="hold no cell"):
        loop.save_annotations("mediar_cellseg", {"x": (sample.image, np.zeros_like(sample.labels))}, tmp_path / "b")
    with pytest.raises(InputError, match="predicts a stain"):
        loop.save_annotations("unetr_lightmycells", annotated, tmp_path / "c")


@pytest.mark.parametrize("bundle,layout_file", [("cupre_instance_seg", "annotations.json"),
                                                ("isl_segmentation", "one/label_nuclei.tif"),
                                                ("pmc_detection", "labels/one_label.tiff")])
def test_annotations_are_written_in_each_bundles_own_layout(tmp_path, sample, bundle, layout_file):
    data = loop.save_annotations(bundle, {"one": (sample.image, sample.labels)}, tmp_path)
    assert (data / layout_file).is_file()
    items = loop.fine_tune_overrides(bundle, [p.name for p in loop._annotated_items(bundle, data)], tmp_path, None)
    assert items["train_items"] == ["one"] == items["val_items"]


def test_pmc_boxes_are_read_as_corner_boxes_with_scores(tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "image.json").write_text(json.dumps({"annotations": [{"bbox": [10, 20, 4, 6], "score": 0.9}]}))
    prediction = read_output("pmc_detection", tmp_path)
    assert prediction.kind == "boxes" and prediction.count == 1
    assert prediction.boxes.tolist() == [[20.0, 10.0, 26.0, 14.0]] and prediction.scores.tolist() == [pytest.approx(0.9)]
    row = prediction.cell_table()[0]
    assert (row["centroid_y"], row["centroid_x"]) == (23.0, 12.0)


def test_the_manifest_and_the_reader_are_napari_plugins(tmp_path, sample):
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(loop.__file__).parents[1] / "napari" / "napari.yaml")
    assert {c.id for c in manifest.contributions.commands} == {"cellzoo.widget", "cellzoo.read", "cellzoo.write_labels"}
    path = write_ome_tiff(tmp_path / "n.ome.tiff", sample.image, "YX", (0.5, 0.25))
    [(data, keywords, kind)] = get_reader(str(path))(str(path))
    assert kind == "image" and data.shape == sample.image.shape and keywords["scale"] == (0.5, 0.25)
    assert get_reader(str(tmp_path / "notes.txt")) is None
