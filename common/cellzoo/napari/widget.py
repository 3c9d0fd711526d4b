"""The cellzoo dock widget: predict with any bundle, correct the result, fine-tune on the corrections, predict again.

Everything it runs goes through cellzoo.interactive (the same functions scripts call): the widget only
collects choices, shows progress and puts results into layers. Runs happen in child processes polled by a
Qt timer, so the viewer stays responsive and Cancel can stop a run at any point.

Layers it adds: Labels for the instance segmenters, Shapes (boxes) + Points (centres) for PMC, an Image for
UNETR's stain; each with the source layer's scale (its physical pixel size), so they overlay it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from cellzoo.errors import InputError
from cellzoo.interactive import Cancelled, FineTuneJob, PredictionJob, can_fine_tune, progress_of, save_annotations
from cellzoo.napari.files import open_image, save_labels

__all__ = ["CellzooWidget"]

POLL_MS = 200
SCALES = ("quick", "paper")


def _bundle_names() -> list[str]:
    from cellzoo.bundles import list_bundles

    return [b["name"] for b in list_bundles()]


class CellzooWidget(QWidget):
    """Dock widget: a Predict section, a per-cell table, a Correct and fine-tune section."""

    def __init__(self, napari_viewer, work_dir: str | Path | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="cellzoo_napari_"))
        self.job = None          # the PredictionJob or FineTuneJob running
        self.checkpoint = None   # None: the bundle's shipped weights; after a fine-tuning, its model.pt
        self.annotated: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.table_rows: list[dict] = []
        self.last_prediction = None
        self._runs = 0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ---- layout ----
    def _build(self) -> None:
        self.bundle = QComboBox()
        self.bundle.addItems(_bundle_names())
        self.bundle.setCurrentText("mediar_cellseg")
        self.bundle.currentTextChanged.connect(self._bundle_changed)
        self.image_layer = QComboBox()
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("shipped weights")
        browse = QPushButton("...")
        browse.clicked.connect(self._choose_checkpoint)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.checkpoint_edit)
        checkpoint_row.addWidget(browse)
        self.scale = QComboBox()
        self.scale.addItems(SCALES)
        self.tta = QCheckBox("test-time augmentation")
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        predict_box = QGroupBox("Predict")
        form = QFormLayout(predict_box)
        form.addRow("bundle", self.bundle)
        form.addRow("image", self.image_layer)
        form.addRow("checkpoint", checkpoint_row)
        form.addRow("network", self.scale)
        form.addRow(self.tta)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        form.addRow(buttons)
        open_button = QPushButton("Open image...")
        open_button.clicked.connect(self._choose_image)
        form.addRow(open_button)

        self.table = QTableWidget(0, 0)
        save_table = QPushButton("Save table...")
        save_table.clicked.connect(self._choose_table_file)
        table_box = QGroupBox("Cells")
        table_layout = QVBoxLayout(table_box)
        table_layout.addWidget(self.table)
        table_layout.addWidget(save_table)

        tune_box = QGroupBox("Correct and fine-tune")
        tune = QFormLayout(tune_box)
        self.labels_layer = QComboBox()
        self.folder_edit = QLineEdit(str(self.work / "session"))
        add = QPushButton("Add image + labels to the annotations")
        add.clicked.connect(self.add_annotation)
        self.annotation_count = QLabel("0 annotated images")
        self.tune_button = QPushButton("Fine-tune and predict again")
        self.tune_button.clicked.connect(self.fine_tune)
        save_button = QPushButton("Save labels as OME-TIFF...")
        save_button.clicked.connect(self._choose_labels_file)
        tune.addRow("labels", self.labels_layer)
        tune.addRow(add)
        tune.addRow(self.annotation_count)
        tune.addRow("save in", self.folder_edit)
        tune.addRow(self.tune_button)
        tune.addRow(save_button)
        self.curve_canvas, self.curve_axes = _curve_canvas()
        tune.addRow(self.curve_canvas)

        layout = QVBoxLayout(self)
        for widget in (predict_box, self.progress, self.status, table_box, tune_box):
            layout.addWidget(widget)
        self._bundle_changed(self.bundle.currentText())

    def _bundle_changed(self, bundle: str) -> None:
        from cellzoo.inference.single_image import has_tta

        self.checkpoint = None
        self.checkpoint_edit.setPlaceholderText("shipped weights")
        self.tta.setEnabled(has_tta(bundle))
        self.tune_button.setEnabled(can_fine_tune(bundle))

    def _refresh_layers(self, event=None) -> None:
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_layer, Image), (self.labels_layer, Labels)):
            current = combo.currentText()
            combo.clear()
            combo.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kind)])
            if current:
                combo.setCurrentText(current)

    # ---- messages ----
    def notify_error(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)

    def confirm(self, question: str) -> bool:
        answer = QMessageBox.question(self, "cellzoo", question, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    # ---- predict ----
    def _layer(self, combo: QComboBox):
        name = combo.currentText()
        if not name or name not in self.viewer.layers:
            raise InputError("choose a layer first (open an image or add one to the viewer)")
        return self.viewer.layers[name]

    def _image_plane(self, layer) -> np.ndarray:
        """The 2D image to predict: the layer itself, or the plane the viewer shows of a stack."""
        data = np.asarray(layer.data)
        spatial = data.ndim - (1 if layer.rgb else 0)
        if spatial > 2:
            index = tuple(int(i) for i in self.viewer.dims.current_step[-spatial:-2])
            data = data[index]
        return data

    def predict(self) -> None:
        if self.job is not None:
            return self.notify_error("a run is going on: wait for it or cancel it")
        try:
            layer = self._layer(self.image_layer)
            image = self._image_plane(layer)
            checkpoint = self.checkpoint_edit.text().strip() or self.checkpoint
            quick = None if checkpoint is None else self.scale.currentText() == "quick"
            if self.checkpoint is not None and not self.checkpoint_edit.text().strip():
                quick = True  # a fine-tuning of this widget trains the quick recipe
            self._runs += 1
            tta = self.tta.isChecked() if self.tta.isEnabled() else None
            self.job = PredictionJob(self.bundle.currentText(), image, self.work / f"run{self._runs}", checkpoint,
                                     quick, tta, on_line=self._remember_line)
        except (InputError, RuntimeError, OSError) as err:
            return self.notify_error(str(err))
        self._source = layer
        self._started("predicting")

    def _remember_line(self, line: str) -> None:
        self._last_line = line  # read by the timer in the GUI thread

    def _started(self, what: str) -> None:
        self._last_line = ""
        self.progress.setRange(0, 0)  # busy until the run reports counts
        self.status.setText(what + "...")
        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._timer.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _poll(self) -> None:
        line = getattr(self, "_last_line", "")
        counts = progress_of(line)
        if counts:
            self.progress.setRange(0, counts[1])
            self.progress.setValue(counts[0])
        if isinstance(self.job, FineTuneJob):
            self._draw_curve(self.job.curve())
        if self.job is not None and not self.job.run.running():
            self._finished()

    def _finished(self) -> None:
        job, self.job = self.job, None
        self._timer.stop()
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.predict_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        try:
            result = job.result()
        except Cancelled:
            self.status.setText("cancelled")
            return
        except (RuntimeError, InputError, OSError) as err:
            return self.notify_error(str(err))
        if isinstance(job, FineTuneJob):
            self._draw_curve(job.curve())
            self.checkpoint = result
            self.checkpoint_edit.clear()
            self.checkpoint_edit.setPlaceholderText(f"fine-tuned: {result}")
            self.status.setText(f"fine-tuned in {time.perf_counter() - job.started:.0f} s: {result}; predicting again")
            self.predict()
            return
        self.show_prediction(result, self._source)

    def show_prediction(self, prediction, source) -> None:
        """Put a prediction into layers that overlay `source` (its scale and translation)."""
        place = {"scale": source.scale[-2:], "translate": source.translate[-2:]}
        name = f"{prediction.bundle} {prediction.kind}"
        if prediction.kind == "labels":
            self._replace(name, lambda: self.viewer.add_labels(prediction.labels, name=name, **place),
                          prediction.labels)
            self.labels_layer.setCurrentText(name)
        elif prediction.kind == "boxes":
            rectangles = [np.array([[y0, x0], [y1, x1]]) for y0, x0, y1, x1 in prediction.boxes]
            self._replace(name, lambda: self.viewer.add_shapes(
                rectangles, shape_type="rectangle", name=name, edge_color="yellow", face_color="transparent",
                features={"score": prediction.scores}, **place))
            centres = [((y0 + y1) / 2, (x0 + x1) / 2) for y0, x0, y1, x1 in prediction.boxes]
            self._replace(f"{name} centres", lambda: self.viewer.add_points(
                np.array(centres).reshape(-1, 2), name=f"{name} centres", size=4, face_color="red", **place))
        else:
            self._replace(name, lambda: self.viewer.add_image(prediction.image, name=name, colormap="magenta",
                                                              blending="additive", **place), prediction.image)
        self.last_prediction = prediction
        spacing = tuple(source.scale[-2:]) if source.metadata.get("physical_size_um") else None
        self.table_rows = prediction.cell_table(self._image_plane(source), spacing)
        self._fill_table(self.table_rows)
        self.status.setText(f"{prediction.count} cells in {prediction.seconds:.1f} s ({prediction.bundle})"
                            if prediction.kind != "image" else f"stain predicted in {prediction.seconds:.1f} s")

    def _replace(self, name: str, add, data=None) -> None:
        """A new layer, or new data in the layer of that name (kept with the user's display settings, and
        the canvas keeps drawing: removing and re-adding a layer left napari's offscreen canvas black)."""
        if name in self.viewer.layers and data is not None:
            self.viewer.layers[name].data = data
            return
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        add()

    def _fill_table(self, rows: list[dict]) -> None:
        columns = list(rows[0]) if rows else []
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        for r, row in enumerate(rows):
            for c, key in enumerate(columns):
                value = row[key]
                self.table.setItem(r, c, QTableWidgetItem(f"{value:.4g}" if isinstance(value, float) else str(value)))

    def save_table(self, path: str | Path) -> Path | None:
        from cellzoo.postprocess.measure import write_measurements_csv

        if not self.table_rows:
            self.notify_error("no cells to save: predict first")
            return None
        path = Path(path)
        if path.exists() and not self.confirm(f"{path} exists. Replace it?"):
            return None
        return write_measurements_csv(self.table_rows, path)

    # ---- correct and fine-tune ----
    def add_annotation(self) -> None:
        """Register the chosen image (its shown plane) and labels layer as one annotated image."""
        try:
            image_layer, labels_layer = self._layer(self.image_layer), self._layer(self.labels_layer)
            image, labels = self._image_plane(image_layer), np.asarray(labels_layer.data)
            if labels.shape != image.shape[:2]:
                raise InputError(f"the labels ({labels.shape}) do not match the image ({image.shape[:2]})")
        except InputError as err:
            return self.notify_error(str(err))
        self.annotated[image_layer.name] = (image.copy(), labels.copy())
        self.annotation_count.setText(f"{len(self.annotated)} annotated image(s)")

    def fine_tune(self, settings: dict | None = None) -> None:
        """Save the annotations, train the quick recipe from the current checkpoint, then predict again."""
        if self.job is not None:
            return self.notify_error("a run is going on: wait for it or cancel it")
        bundle, folder = self.bundle.currentText(), Path(self.folder_edit.text().strip() or self.work / "session")
        try:
            if not self.annotated and self.labels_layer.currentText():
                self.add_annotation()
            try:
                save_annotations(bundle, self.annotated, folder)
            except InputError as err:
                if "already holds annotations" not in str(err) or not self.confirm(
                        f"{folder} already holds annotations. Replace them with this session's?"):
                    raise
                save_annotations(bundle, self.annotated, folder, overwrite=True)
            init = self.checkpoint_edit.text().strip() or self.checkpoint or _shipped(bundle)
            self.job = FineTuneJob(bundle, folder, init, settings=settings if isinstance(settings, dict) else None,
                                   on_line=self._remember_line)
        except (InputError, RuntimeError, OSError) as err:
            return self.notify_error(str(err))
        show_info(f"fine-tuning {bundle} on {len(self.annotated)} image(s); data and model in {folder}")
        self._started("fine-tuning")

    def _draw_curve(self, rows: list[dict]) -> None:
        axes = self.curve_axes
        axes.clear()
        scored = [r for r in rows if r.get("val_metric") is not None]
        if scored:
            axes.plot([r["iteration"] for r in scored], [r["val_metric"] for r in scored], "o-", ms=3)
        axes.set_xlabel("iteration", fontsize=7)
        axes.set_ylabel("validation score", fontsize=7)
        axes.tick_params(labelsize=6)
        self.curve_canvas.draw_idle()

    # ---- files ----
    def open(self, path: str | Path):
        """Open an image through cellzoo's readers (explicit axes, OME pixel sizes as scale)."""
        try:
            layer = open_image(self.viewer, path)
        except (InputError, OSError, ValueError) as err:
            self.notify_error(str(err))
            return None
        self.image_layer.setCurrentText(layer.name)
        return layer

    def save_labels(self, path: str | Path) -> Path | None:
        try:
            layer = self._layer(self.labels_layer)
            path = Path(path)
            if path.exists() and not self.confirm(f"{path} exists. Replace it?"):
                return None
            return save_labels(layer, path)
        except (InputError, OSError) as err:
            self.notify_error(str(err))
            return None

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image")
        if path:
            self.open(path)

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", filter="Checkpoints (*.pt *.onnx)")
        if path:
            self.checkpoint_edit.setText(path)

    def _choose_table_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save cells", filter="CSV (*.csv)")
        if path:
            self.save_table(path)

    def _choose_labels_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", filter="OME-TIFF (*.ome.tiff)")
        if path:
            self.save_labels(path)


def _shipped(bundle: str):
    from cellzoo.shipped_weights import shipped_weights

    shipped = shipped_weights(bundle)
    return None if shipped is None else shipped.checkpoint


def _curve_canvas():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 1.8), tight_layout=True)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(140)
    return canvas, figure.add_subplot(111)
