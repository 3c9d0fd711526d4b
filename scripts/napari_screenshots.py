"""The screenshots of docs/napari.md: the cellzoo widget in napari on a real nucleus image.

    python scripts/napari_screenshots.py [--realdata ../shared/realdata] [--out docs/images] [--item NAME]

Headless (Qt's offscreen platform on a virtual X server: pytest-xvfb's Xvfb, started here when no DISPLAY
is set). Opens one real image of the benchmark's test items (not seen by the shipped weights), predicts it
with MEDIAR's shipped weights, then fine-tunes on its ground truth as the corrected labels (a short
fine-tuning: the picture shows the widget's curve, not a result) and predicts again. Writes
napari_predict.png and napari_fine_tune.png (the whole window: canvas and widget).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHORT = {"max_epochs": 8, "min_iterations": 0}  # a curve with a few points in the picture


def _display() -> subprocess.Popen | None:
    """Start Xvfb when there is no screen (the GL canvas needs an X server even offscreen)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if os.environ.get("DISPLAY") or shutil.which("Xvfb") is None:
        return None
    server = subprocess.Popen(["Xvfb", ":93", "-screen", "0", "1600x1200x24"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = ":93"
    time.sleep(1.5)
    return server


def _wait(app, widget, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while widget.job is not None and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    app.processEvents()


def _settle(app, viewer, seconds: float = 1.5) -> None:
    """Let the canvas draw the layers added last (a screenshot right after a layer change can come out black)."""
    viewer.reset_view()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)


def _layers_picture(image, labels, limits, height: int):
    """The image with the labels overlaid, drawn without OpenGL (skimage), `height` px high."""
    import numpy as np
    from skimage.color import label2rgb
    from skimage.transform import resize

    low, high = limits
    grey = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
    picture = label2rgb(labels, grey, alpha=0.35, bg_label=0, image_alpha=1.0)
    width = int(round(picture.shape[1] * height / picture.shape[0]))
    return (resize(picture, (height, width), order=0) * 255).astype(np.uint8)


def _grab(widget):
    """The widget as an RGB(A) array (Qt renders it without OpenGL)."""
    from skimage.io import imread

    with tempfile.TemporaryDirectory(prefix="cellzoo_grab_") as folder:
        path = Path(folder) / "widget.png"
        widget.grab().save(str(path))
        return imread(path)


def _save_side_by_side(left, right, path: Path) -> None:
    import numpy as np
    from skimage.io import imsave

    height = max(left.shape[0], right.shape[0])
    pad = [np.pad(p[..., :3], ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=38) for p in (left, right)]
    imsave(path, np.concatenate(pad, axis=1), check_contrast=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--item", default="gowt1_01_t031")
    args = parser.parse_args(argv)
    server = _display()
    try:
        import napari
        import numpy as np
        from qtpy.QtWidgets import QApplication

        from cellzoo.benchmarks.samples import real_nuclei
        from cellzoo.napari.widget import CellzooWidget

        sample = {s.name: s for s in real_nuclei(args.realdata)[0]}[args.item]
        viewer = napari.Viewer(show=False)
        viewer.window._qt_window.resize(1500, 950)
        widget = CellzooWidget(viewer, work_dir=tempfile.mkdtemp(prefix="cellzoo_shots_"))
        viewer.window.add_dock_widget(widget, name="cellzoo", area="right")
        viewer.add_image(sample.image, name=args.item, contrast_limits=np.percentile(sample.image, (1, 99.5)).tolist())
        app = QApplication.instance()
        widget.image_layer.setCurrentText(args.item)
        widget.predict()
        _wait(app, widget)
        args.out.mkdir(parents=True, exist_ok=True)
        _settle(app, viewer)
        viewer.screenshot(str(args.out / "napari_predict.png"), canvas_only=False)
        print(widget.status.text(), file=sys.stderr)
        viewer.layers["mediar_cellseg labels"].data = sample.labels.astype(np.int32)  # the corrected labels
        widget.add_annotation()
        widget.fine_tune(settings=SHORT)
        while widget.job is not None or widget.checkpoint is None:
            _wait(app, widget)
            if widget.checkpoint is None and widget.job is None:
                raise RuntimeError(f"the fine-tuning failed: {widget.status.text()}")
        _wait(app, widget)
        print(widget.status.text(), file=sys.stderr)
        # napari's offscreen canvas draws black once a layer's data has been replaced (Mesa under Xvfb, even
        # in a new viewer of the same process): this picture joins the widget itself to the same two layers
        # drawn by skimage
        panel = _grab(widget)
        layers = _layers_picture(sample.image, np.asarray(viewer.layers["mediar_cellseg labels"].data),
                                 viewer.layers[args.item].contrast_limits, panel.shape[0])
        _save_side_by_side(layers, panel, args.out / "napari_fine_tune.png")
        viewer.close()
    finally:
        if server is not None:
            server.terminate()
    print(f"written {args.out / 'napari_predict.png'} and {args.out / 'napari_fine_tune.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
