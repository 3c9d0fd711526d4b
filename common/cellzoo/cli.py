"""The `cellzoo` command (python-fire): list, synth, evaluate, measure, predict, isl-fewshot, package, install, demo.

Bad input ends in one line on stderr naming the file and the problem, and exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import fire

from cellzoo.errors import InputError

EXIT_BAD_INPUT = 2


def _print_json(result: dict, out: str | None = None) -> None:
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def _parse_size(size) -> tuple[int, int]:
    """Accept "H,W" as fire hands it over: a string, a tuple or a single int."""
    if isinstance(size, int):
        return (size, size)
    parts = size.split(",") if isinstance(size, str) else list(size)
    try:
        values = tuple(int(p) for p in parts)
    except (TypeError, ValueError) as err:
        raise InputError(f"--size must be H,W in pixels, got {size!r}") from err
    if len(values) != 2 or min(values) < 16:
        raise InputError(f"--size must be two integers >= 16 (H,W), got {size!r}")
    return values


def _checkpoint_list(checkpoint) -> list[str]:
    """--checkpoint as fire hands it over: None, a path, 'a.pt,b.pt' or a list/tuple of paths."""
    if checkpoint is None:
        return []
    if isinstance(checkpoint, (list, tuple)):
        return [str(c) for c in checkpoint]
    return [part for part in str(checkpoint).split(",") if part]


class Evaluate:
    """Score predictions against ground truth; prints one JSON object."""

    def instance(self, pred: str, gt: str, iou: float = 0.5, json: str | None = None, border: int = 0):
        """Instance F1/precision/recall at --iou and AP at IoU 0.5..0.95 for label images matched by stem.

        --border N ignores cells within N px of the image border (NeurIPS CellSeg uses 2).
        """
        from cellzoo.evaluation import evaluate_instance_folders

        if not 0.0 < float(iou) < 1.0:
            raise InputError(f"--iou must lie in (0, 1), got {iou}")
        _print_json(evaluate_instance_folders(str(pred), str(gt), iou=float(iou), border_margin=int(border)), json)

    def coco(self, pred: str, gt: str, iou_type: str = "segm", protocol: str = "coco", json: str | None = None):
        """COCO AP, AP50, AP75, APs, APm, APl (protocol coco or livecell) through pycocotools."""
        from cellzoo.evaluation import evaluate_coco_files

        if iou_type not in ("segm", "bbox"):
            raise InputError(f"--iou-type must be segm or bbox, got {iou_type!r}")
        if protocol not in ("coco", "livecell"):
            raise InputError(f"--protocol must be coco or livecell, got {protocol!r}")
        _print_json(evaluate_coco_files(str(pred), str(gt), iou_type=iou_type, protocol=protocol), json)

    def image(self, pred: str, gt: str, json: str | None = None, normalize: bool = True):
        """MAE, MSE, PSNR, SSIM, Pearson, Euclidean and cosine distance after (2, 99.8) percentile normalisation."""
        from cellzoo.evaluation import evaluate_image_folders

        _print_json(evaluate_image_folders(str(pred), str(gt), normalize=bool(normalize)), json)


class CellzooCLI:
    """cellzoo: label-efficient cell microscopy bundles and tools."""

    def __init__(self):
        self.evaluate = Evaluate()

    def list(self):
        """List the bundles, their task and the configs (tasks) each offers."""
        from cellzoo.bundles import bundles_dir, list_bundles
        from cellzoo.synthetic import LAYOUTS

        bundles = list_bundles()
        if not bundles:
            print(f"no bundles found in {bundles_dir()}")
        for info in bundles:
            print(f"{info['name']}  v{info['version']}  {info['task']}")
            print(f"    configs: {', '.join(info['configs'])}")
        print(f"synthetic layouts: {', '.join(LAYOUTS)}")

    def synth(self, layout: str, n: int, out: str, seed: int = 0, size="256,256", depth: int | None = None):
        """Write a synthetic dataset with ground truth in a published layout.

        --layout cellseg|ctc|coco|lightmycells|isl, --n images (frames for ctc), --size H,W,
        --depth Z makes 3D stacks (ctc only).
        """
        from cellzoo.synthetic import LAYOUTS, synthesize

        if layout not in LAYOUTS:
            raise InputError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if int(n) < 1:
            raise InputError(f"--n must be at least 1, got {n}")
        options = {} if depth is None else {"depth": int(depth)}
        path = synthesize(layout, int(n), str(out), seed=int(seed), size=_parse_size(size), **options)
        print(f"wrote {layout} layout with n={n} (seed {seed}) to {path}")

    def measure(self, image: str, labels: str, out: str):
        """Per-cell measurements (centroid, area, bbox, shape, mean intensity per channel) as CSV."""
        from cellzoo.postprocess.measure import measure_files

        rows = measure_files(str(image), str(labels), str(out))
        print(f"measured {len(rows)} cells -> {out}")

    def predict(self, bundle: str, input: str, output: str, checkpoint=None, quick: bool = False):
        """Run a bundle's inference config on a folder of images.

        --checkpoint takes one path, several separated by commas, or a list: several = an ensemble.
        Without it the bundle's models/model.pt is used. --quick matches checkpoints trained with quick.yaml.
        """
        from cellzoo.bundles import bundle_path, run_config

        checkpoints = _checkpoint_list(checkpoint) or [str(bundle_path(bundle) / "models" / "model.pt")]
        for path in checkpoints:
            if not Path(path).is_file():
                raise InputError("checkpoint not found (train the bundle first or pass --checkpoint)", path)
        if not Path(str(input)).is_dir():
            raise InputError("input folder not found", input)
        run_config(bundle, "inference", quick=bool(quick), input_dir=str(input), output_dir=str(output),
                   checkpoints=checkpoints)
        print(f"predictions written to {output}")

    def isl_fewshot(self, data: str, sizes="1,10,50", task: str = "nuclei", quick: bool = False,
                    out: str = "isl_fewshot", n_test: int | None = None, seed: int = 0, crops: int = 5,
                    pretext_epochs: int | None = None, finetune_epochs: int | None = None):
        """ISL few-shot study: scratch vs ISL-pretrained segmenters at each training-set size N.

        DATA is an ISL-layout folder (fields with label-free planes, the stain and labels). A fixed test set
        (--n-test fields, default 20%) is scored on --crops random crops per field; writes
        <out>/fewshot_<task>.csv and .png and prints the table.
        """
        from cellzoo.isl_fewshot import run_fewshot

        parts = sizes if isinstance(sizes, (list, tuple)) else str(sizes).split(",")
        try:
            size_list = [int(part) for part in parts]
        except ValueError as err:
            raise InputError(f"--sizes must be comma-separated integers, got {sizes!r}") from err
        rows = run_fewshot(str(data), size_list, task=str(task), out=str(out), quick=bool(quick), n_test=n_test,
                           seed=int(seed), crops_per_image=int(crops), pretext_epochs=pretext_epochs,
                           finetune_epochs=finetune_epochs)
        print(f"{'N':>4}  {'init':<10}  {rows[0]['metric']}")
        for row in rows:
            print(f"{row['n_train']:>4}  {row['init']:<10}  {row['value']:.3f}")
        print(f"table and plot in {out}")

    def package(self, bundle: str, out: str, large_file_mb: float = 25, base_url: str | None = None):
        """Zip a bundle as <out>/<name>_v<version>.zip for `python -m monai.bundle download`.

        Files over --large-file-mb MB stay out of the zip: they are copied to <name>_v<version>_files/ and
        listed in the zip's large_files.yml under --base-url (where you will publish them).
        """
        from cellzoo.packaging import listed_large_files, package_bundle

        if float(large_file_mb) <= 0:
            raise InputError(f"--large-file-mb must be positive, got {large_file_mb}")
        zip_path = package_bundle(str(bundle), str(out), large_file_mb=float(large_file_mb),
                                  base_url=None if base_url is None else str(base_url))
        print(zip_path)
        for entry in listed_large_files(zip_path):
            print(f"large file {entry['path']} -> {entry['url']}")

    def install(self, source: str, bundle_dir: str, sha256: str | None = None):
        """Download (URL) or read (path) a bundle zip, check hash and entries, extract and fetch large files.

        --sha256 HEX refuses a zip whose sha256 differs; nothing is written unless every check passes.
        """
        import re

        from cellzoo.packaging import install_bundle

        # fire turns an all-digit value into a number, so a hex digest is checked as text here
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
            raise InputError(f"--sha256 must be 64 hex digits (quote it), got {sha256!r}")
        print(install_bundle(str(source), str(bundle_dir), sha256=None if sha256 is None else str(sha256)))

    def demo(self, out: str = "demo_output", seed: int = 0):
        """Synthesise a small dataset, draw it, measure its cells and evaluate its labels against themselves."""
        from cellzoo.demo import run_demo

        run_demo(str(out), seed=int(seed))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `cellzoo` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire(CellzooCLI, command=argv, name="cellzoo")
    except (InputError, FileNotFoundError, PermissionError) as err:
        if debug:
            raise
        print(f"cellzoo: error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
