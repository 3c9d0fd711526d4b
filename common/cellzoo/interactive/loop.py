"""Predict, correct, fine-tune, predict again: the human-in-the-loop cycle, without a GUI.

The napari widget (cellzoo.napari) is a thin layer over this module, and scripts measure the loop through
the same functions (scripts/measure_correction_loop.py), so what is measured is what the widget does.

- `PredictionJob`: one image (a napari layer's data) written in the layout the bundle's inference reads
  (cellzoo.inference.single_image),
  `cellzoo predict` run on it in a child process (shipped weights unless a checkpoint is given; the same
  checks and one-line errors as the command line), its output read back as a `Prediction`: instance labels
  (MEDIAR, CUPre, ISL), boxes with scores and centres (PMC), or a stain image (UNETR).
- `save_annotations`: the images the user annotated in the session, in the bundle's own dataset layout
  (the layouts the benchmark writes, cellzoo.benchmarks.layouts), so the folder trains again later with
  `python -m monai.bundle run` (`train_command` gives the line) or joins a study.
- `FineTuneJob`: the bundle's quick recipe (train config + quick.yaml: early stopping, the best model kept)
  from the current checkpoint on those images, validated on them (as a study's fine-tunings are: with one
  labelled image there is none to spare), in a child process; its training curve is read while it runs.

Fine-tuning takes instance labels, so it is offered for the bundles that take part in the benchmark's
nucleus task (their study.yaml `benchmark.nuclei`): MEDIAR, CUPre, ISL (nuclei) and PMC (boxes from the
labels). UNETR predicts a stain; a painted correction of it is no training target.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellzoo.errors import InputError
from cellzoo.inference.single_image import Prediction, has_tta, plane, read_output, write_input
from cellzoo.interactive.background import BackgroundRun

__all__ = ["FineTuneJob", "Prediction", "PredictionJob", "can_fine_tune", "save_annotations", "train_command"]

# From trained weights the quick recipe's learning rate (set for training from scratch) is cut tenfold:
# at the recipe's own rate, MEDIAR fine-tuned on one corrected DSB image forgot the rest (F1 on the GOWT1
# test images 0.36-0.41 -> 0.00-0.01; docs/napari.md)
FROM_WEIGHTS_LR_FACTOR = 0.1
TRAINED = "model"     # <folder>/model/model.pt: the fine-tuned checkpoint
DATA = "data"         # <folder>/data: the annotations in the bundle's layout


class PredictionJob:
    """`cellzoo predict` on one image in a child process; `result()` waits and reads the prediction.

    `checkpoint`: a `.pt` or `.onnx` file (None: the bundle's shipped weights); `quick`: whether it fits the
    quick network (None: the shipped weights' own setting, else paper scale); `tta`: None keeps the config's.
    """

    def __init__(self, bundle: str, image: np.ndarray, work: str | Path, checkpoint: str | Path | None = None,
                 quick: bool | None = None, tta: bool | None = None, settings: dict | None = None,
                 on_line: Callable[[str], None] | None = None):
        self.bundle, self.work = bundle, Path(work)
        self.input = write_input(bundle, image, self.work / "input")
        self.output = self.work / "prediction"
        args = ["-m", "cellzoo.cli", "predict", bundle, "--input", self.input, "--output", self.output,
                "--overwrite"]
        if checkpoint is not None:
            args += ["--checkpoint", checkpoint]
        if quick is not None:
            args += [f"--quick={bool(quick)}"]
        chosen = {**(settings or {}), **({"tta": bool(tta)} if tta is not None and has_tta(bundle) else {})}
        if chosen:
            args += ["--set", json.dumps(chosen)]
        self.started = time.perf_counter()
        self.run = BackgroundRun(args, on_line)

    def cancel(self) -> None:
        self.run.cancel()

    def result(self) -> Prediction:
        self.run.check()
        prediction = read_output(self.bundle, self.output)
        prediction.seconds = time.perf_counter() - self.started
        return prediction


# ---- corrections in, a fine-tuned model out -------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """How a bundle fine-tunes on instance labels: its dataset layout and study task (study.yaml)."""

    bundle: str
    layout: str
    config: str
    overrides: dict = field(default_factory=dict)


def fine_tune_recipe(bundle: str) -> Recipe:
    """The bundle's nucleus-instance recipe; InputError for a bundle that does not train on instance labels."""
    from cellzoo.benchmarks.label_efficiency import bundle_entries
    from cellzoo.studies import load_study

    entry = next((e for e in bundle_entries() if e.bundle == bundle and e.kind == "nuclei"), None)
    if entry is None:
        raise InputError(f"{bundle} predicts a stain, not cells: its corrections cannot train it (fine-tune "
                         "MEDIAR, CUPre, ISL or PMC)")
    task = load_study(bundle).task(entry.study_task)
    return Recipe(bundle, entry.layout, task.finetune.config,
                  {**task.overrides, **task.finetune.overrides, **entry.settings})


def can_fine_tune(bundle: str) -> bool:
    try:
        fine_tune_recipe(bundle)
    except InputError:
        return False
    return True


def save_annotations(bundle: str, annotated: dict[str, tuple[np.ndarray, np.ndarray]], folder: str | Path,
                     overwrite: bool = False) -> Path:
    """Write {name: (image, labels)} in the bundle's dataset layout under <folder>/data; returns that folder.

    A folder that already holds annotations is refused unless `overwrite` (then replaced as a whole, so no
    item of an earlier session lingers among the new ones)."""
    import shutil

    from cellzoo.benchmarks.layouts import write_layout
    from cellzoo.benchmarks.samples import NucleusSample

    if not annotated:
        raise InputError("no annotated image yet: correct or paint the labels of at least one image")
    recipe, data = fine_tune_recipe(bundle), Path(folder) / DATA
    for name, (_, labels) in annotated.items():
        if not np.any(np.asarray(labels) > 0):
            raise InputError(f"the labels of {name!r} hold no cell: paint at least one")
    if data.exists() and any(data.iterdir()):
        if not overwrite:
            raise InputError("this folder already holds annotations (choose another folder or allow overwriting)",
                             data)
        shutil.rmtree(data)
    samples = [NucleusSample(_safe_name(name), plane(image), np.asarray(labels).astype(np.int32))
               for name, (image, labels) in annotated.items()]
    write_layout(recipe.layout, samples, data)
    return data


def _safe_name(name: str) -> str:
    """An item name the layouts' file names and the datalists accept: letters, digits, '_' and '-'."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in str(name)).strip("_")
    return cleaned or "image"


def fine_tune_overrides(bundle: str, items: list[str], folder: Path, init: str | Path | None, seed: int = 0,
                        settings: dict | None = None) -> dict:
    """The train config's keys for a fine-tuning on `items` of <folder>/data (validated on the same items);
    from a checkpoint, a tenth of the recipe's learning rate unless `settings` set one."""
    from cellzoo.bundles import parse_config_value

    recipe, settings = fine_tune_recipe(bundle), dict(settings or {})
    if init is not None and "learning_rate" not in settings:
        rate = parse_config_value(bundle, recipe.config, "learning_rate", quick=True, **recipe.overrides)
        settings["learning_rate"] = float(rate) * FROM_WEIGHTS_LR_FACTOR
    return {**recipe.overrides, **settings, "dataset_dir": str(folder / DATA), "train_items": items,
            "val_items": items, "init_ckpt": None if init is None else str(init), "seed": seed,
            "ckpt_dir": str(folder / TRAINED), "output_dir": str(folder / "runs")}


def train_command(bundle: str, overrides: dict) -> str:
    """The `python -m monai.bundle run` line that trains the same recipe on the saved folder later."""
    from cellzoo.bundles import bundle_path, config_files

    root = bundle_path(bundle)
    files = config_files(bundle, fine_tune_recipe(bundle).config, quick=True)
    parts = ["python", "-m", "monai.bundle", "run", "--config_file", str(files), "--bundle_root", str(root)]
    for key, value in overrides.items():
        if value is not None:
            parts += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return shlex.join(parts)


class FineTuneJob:
    """The bundle's quick recipe on the saved annotations, from `init` (a checkpoint), in a child process.

    `curve()` reads the training curve written so far (iteration, train loss, validation score);
    `result()` waits and returns the fine-tuned checkpoint."""

    def __init__(self, bundle: str, folder: str | Path, init: str | Path | None, seed: int = 0,
                 settings: dict | None = None, on_line: Callable[[str], None] | None = None):
        self.bundle, self.folder = bundle, Path(folder)
        items = sorted(p.name for p in _annotated_items(bundle, self.folder / DATA))
        self.overrides = fine_tune_overrides(bundle, items, self.folder, init, seed, settings)
        (self.folder / "train_command.txt").write_text(train_command(bundle, self.overrides) + "\n")
        spec = self.folder / "fine_tune.json"
        spec.write_text(json.dumps({"bundle": bundle, "config": fine_tune_recipe(bundle).config, "quick": True,
                                    "overrides": self.overrides}, indent=2))
        self.started = time.perf_counter()
        self.run = BackgroundRun(["-m", "cellzoo.interactive.run_step", spec], on_line,
                                 env={"PYTHONUNBUFFERED": "1"})

    @property
    def checkpoint(self) -> Path:
        return self.folder / TRAINED / "model.pt"

    def curve(self) -> list[dict]:
        from cellzoo.engines import read_curve

        path = self.folder / TRAINED / "training_curve.csv"
        try:
            return read_curve(path) if path.is_file() else []
        except (OSError, ValueError, KeyError):  # caught mid-write: the next poll reads it whole
            return []

    def cancel(self) -> None:
        self.run.cancel()

    def result(self) -> Path:
        self.run.check()
        if not self.checkpoint.is_file():
            raise RuntimeError(f"the fine-tuning wrote no checkpoint ({self.run.error_line()})")
        return self.checkpoint


def _annotated_items(bundle: str, data: Path) -> list[Path]:
    """The item names of the saved annotations (as the layout names them: files or folders)."""
    layout = fine_tune_recipe(bundle).layout
    if layout == "isl":
        return [p for p in data.iterdir() if p.is_dir()]
    return [Path(p.stem) for p in (data / "images").glob("*.tif")]


def run_in_process(spec_path: str | Path) -> None:
    """Run the bundle config a spec file names (the child process of FineTuneJob)."""
    from cellzoo.bundles import run_config

    spec = json.loads(Path(spec_path).read_text())
    run_config(spec["bundle"], spec["config"], quick=bool(spec["quick"]), **spec["overrides"])
    print(f"fine-tuned checkpoint: {spec['overrides']['ckpt_dir']}/model.pt", file=sys.stderr)
