"""The `cellzoo` command (python-fire): list, synth, evaluate, measure, predict, study, benchmark, export-bioimageio,
package, install, demo.

Bad input (a file, a value, an output that cannot be written) ends in one line on stderr naming the file
and the problem, and exit code 2; `--debug` shows the traceback instead. Every value reaches a bundle
config as data (cellzoo.bundles.run_config), never as config code. Commands refuse to replace results
already on disk unless given `--overwrite`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import fire

from cellzoo.errors import EXIT_BAD_INPUT, InputError, user_error_message

EXIT_INTERRUPTED = 130
# the folders `cellzoo predict` writes into its output folder
PREDICTION_FOLDERS = ("labels", "measurements", "overlays")


def _print_json(result: dict, out: str | None = None, overwrite: bool = False) -> None:
    text = json.dumps(result, indent=2, sort_keys=False)
    if out:
        from cellzoo.io import write_text

        write_text(_output_file(out, overwrite, "--json"), text + "\n")
    print(text)


def _output_file(path, overwrite: bool, option: str) -> Path:
    """A file a command may write: not a folder, and not an existing file unless --overwrite."""
    path = Path(_path(path, option))
    if path.is_dir():
        raise InputError(f"{option} names a folder; give a file name", path)
    if path.exists() and not _flag(overwrite, "--overwrite"):
        raise InputError(f"{option} exists; pass --overwrite to replace it", path)
    return path


def _number(value, option: str, kind=float, minimum=None, maximum=None, exclusive: bool = False):
    """A number option checked for type and range ([minimum, maximum], or open with `exclusive`)."""
    try:
        number = kind(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{option} must be a number, got {value!r}") from err
    low_bad = minimum is not None and (number <= minimum if exclusive else number < minimum)
    high_bad = maximum is not None and (number >= maximum if exclusive else number > maximum)
    if low_bad or high_bad:
        bounds = f"({minimum}, {maximum})" if exclusive else f"[{minimum}, {maximum}]"
        raise InputError(f"{option} must lie in {bounds.replace('None', '...')}, got {value!r}")
    return number


TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _flag(value, option: str) -> bool:
    """A boolean option: True/False as fire gives them, or true/false/yes/no/1/0/on/off in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise InputError(f"{option} takes true or false (yes/no, 1/0), got {value!r}")


def _parse_size(size) -> tuple[int, int]:
    """Accept "H,W" as fire hands it over: a string, a tuple or a single int."""
    parts = [size] * 2 if isinstance(size, (int, float)) else size.split(",") if isinstance(size, str) else list(size)
    try:
        values = tuple(_whole(p) for p in parts)
    except (TypeError, ValueError) as err:
        raise InputError(f"--size must be H,W in pixels, got {size!r}") from err
    if len(values) != 2 or min(values) < 16:
        raise InputError(f"--size must be two integers >= 16 (H,W), got {size!r}")
    return values


def _check_prediction_folder(output: Path, overwrite: bool, bundle: str) -> None:
    """Refuse an output folder that holds earlier predictions (the shared folders, and the files the bundle's
    study.yaml declares as its output, `data.inference_output`), unless --overwrite."""
    from cellzoo.studies import load_study

    if output.exists() and not output.is_dir():
        raise InputError("--output is a file, not a folder", output)
    declared = load_study(bundle).data.get("inference_output")
    earlier = sorted({p for name in PREDICTION_FOLDERS for p in (output / name).glob("*") if p.is_file()} |
                     ({p for p in output.glob(declared) if p.is_file()} if declared else set()))
    if earlier and not overwrite:
        raise InputError(f"the output folder already holds {len(earlier)} prediction file(s) (e.g. "
                         f"{earlier[0].relative_to(output)}); pass --overwrite to replace them or choose another "
                         "--output", output)


# MONAI's config keys that instantiate, import, disable or switch a component: never data
CONFIG_CODE_KEYS = ("_target_", "_requires_", "_disabled_", "_mode_", "_desc_")


def _plain_data(value, option: str, where: str = "") -> None:
    """Refuse what MONAI's parser would run or follow: its code keys at any depth, and strings that start
    with `$` (an expression), `@` (a reference) or `%` (a macro), or hold a relative id (`@::`, `%::`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key) in CONFIG_CODE_KEYS:
                raise InputError(f"{option}: {where + str(key)!r} is a config code key; values must be plain data")
            _plain_data(item, option, f"{where}{key}#")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _plain_data(item, option, f"{where}{index}#")
    elif isinstance(value, str) and (value.startswith(("$", "@", "%")) or "@::" in value or "%::" in value):
        raise InputError(f"{option}: {where.rstrip('#') or 'the value'} = {value!r} would run as config code "
                         "(it starts with $, @ or %); values must be plain data")


def _config_settings(value, bundle: str, config: str | None, quick: bool, option: str = "--set") -> dict:
    """--set as a mapping of existing config keys to plain data ("{key: value, ...}", YAML or a dict)."""
    import re

    import yaml
    from monai.bundle import ConfigParser

    from cellzoo.bundles import config_files

    if value is None:
        return {}
    try:
        settings = yaml.safe_load(value) if isinstance(value, str) else value
    except yaml.YAMLError as err:
        raise InputError(f"{option} must be a mapping such as \"{{task: cells}}\" ({err})") from err
    if not isinstance(settings, dict):
        raise InputError(f"{option} must be a mapping such as \"{{task: cells}}\", got {value!r}")
    _plain_data(settings, option)
    if config is None:  # only the form is checked here; the caller checks the keys
        return settings
    parser = ConfigParser()
    parser.read_config(config_files(bundle, config, quick))
    for key in settings:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_]\w*(#\w+)*", key) or key not in parser:
            raise InputError(f"{option}: {key!r} is not a key of {bundle}'s {config}.yaml")
    return settings


def _pretrain_settings(value, bundle: str, spec, quick: bool) -> dict:
    """--pretrain-set: each key must be a key of at least one pretraining config of the study's task
    (CUPre's `cell_dir` is one of AMT2 and MoCo, not of the COCO pretraining)."""
    if value is None:
        return {}
    configs = sorted({step.config for step in spec.pretrainings.values()})
    if not configs:
        raise InputError(f"--pretrain-set: the {spec.name} study of {bundle} has no pretraining")
    settings = {}
    for key, item in _config_settings(value, bundle, None, quick, "--pretrain-set").items():
        for config in configs:
            try:
                settings.update(_config_settings({key: item}, bundle, config, quick, "--pretrain-set"))
                break
            except InputError:
                continue
        else:
            raise InputError(f"--pretrain-set: {key!r} is not a key of {bundle}'s {' or '.join(c + '.yaml' for c in configs)}")
    return settings


def _run_with_fit_hint(run, bundle: str, quick: bool, settings: dict):
    """`run()` (which loads each checkpoint once) and its result; a checkpoint that does not fit gets the hint
    to add or drop --quick when it fits the network of the other scale."""
    from cellzoo.errors import find_input_error

    try:
        return run()
    except Exception as err:
        cause = find_input_error(err)
        if cause is None or "does not fit the network" not in cause.problem or not _fits(bundle, cause.path,
                                                                                          not quick, settings):
            raise
        hint = "drop --quick (it fits the paper-scale network)" if quick else "add --quick (it fits the quick network)"
        raise InputError(f"{cause.problem}; {hint}", cause.path) from err


def _fits(bundle: str, path: str, quick: bool, settings: dict) -> bool:
    from cellzoo.bundles import parse_config_value
    from cellzoo.engines import load_weights

    try:
        load_weights(parse_config_value(bundle, "inference", "network_def", quick=quick, **settings), path)
    except InputError:
        return False
    return True


def _items(value) -> list:
    """A comma-separated list as fire hands it over: a string, a number, or a tuple/list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _int_list(value, option: str, minimum: int = 0) -> list[int]:
    """Comma-separated whole numbers >= minimum, at least one."""
    try:
        numbers = [_whole(part) for part in _items(value)]
    except (TypeError, ValueError) as err:
        raise InputError(f"{option} must be comma-separated integers, got {value!r}") from err
    if not numbers or min(numbers) < minimum:
        raise InputError(f"{option} must be comma-separated integers >= {minimum}, at least one, got {value!r}")
    return numbers


def _whole_option(value, option: str) -> int:
    try:
        return _whole(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{option} must be a whole number, got {value!r}") from err


def _whole(value) -> int:
    """int(value) for whole numbers only ("2.5" and 2.5 are refused, 2 and "2" pass)."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _float_list(value, option: str) -> list[float]:
    """Comma-separated positive numbers, at least one."""
    try:
        numbers = [float(part) for part in _items(value)]
    except (TypeError, ValueError) as err:
        raise InputError(f"{option} must be comma-separated numbers, got {value!r}") from err
    if not numbers or min(numbers) <= 0:
        raise InputError(f"{option} must be comma-separated positive numbers, at least one, got {value!r}")
    return numbers


def _name_list(value) -> list[str]:
    return [str(part) for part in _items(value)]


def _path(value, option: str) -> str:
    if value is None or value is True or value == "":
        raise InputError(f"{option} needs a path")
    return str(value)


def _checkpoint_list(checkpoint) -> list[str]:
    """--checkpoint as fire hands it over: None, a path, 'a.pt,b.pt' or a list/tuple of paths."""
    if checkpoint is None:
        return []
    if isinstance(checkpoint, (list, tuple)):
        return [str(c) for c in checkpoint]
    return [part for part in str(checkpoint).split(",") if part]


class Evaluate:
    """Score predictions against ground truth; prints one JSON object."""

    def instance(self, pred: str, gt: str, iou: float = 0.5, json: str | None = None, border: int = 0,
                 overwrite: bool = False):
        """Instance F1/precision/recall at --iou and AP at IoU 0.5..0.95 for label images matched by stem.

        --border N ignores cells within N px of the image border (NeurIPS CellSeg uses 2). --json FILE also
        writes the report (--overwrite to replace an existing one).
        """
        from cellzoo.metrics.folders import evaluate_instance_folders

        iou = _number(iou, "--iou", float, 0.0, 1.0, exclusive=True)
        border = _number(border, "--border", int, minimum=0)
        if json:
            _output_file(json, overwrite, "--json")  # refused before the work, not after
        _print_json(evaluate_instance_folders(_path(pred, "--pred"), _path(gt, "--gt"), iou=iou, border_margin=border),
                    json, overwrite)

    def coco(self, pred: str, gt: str, iou_type: str = "segm", protocol: str = "coco", json: str | None = None,
             overwrite: bool = False):
        """COCO AP, AP50, AP75, APs, APm, APl (protocol coco or livecell) through pycocotools."""
        from cellzoo.metrics.folders import evaluate_coco_files

        if iou_type not in ("segm", "bbox"):
            raise InputError(f"--iou-type must be segm or bbox, got {iou_type!r}")
        if protocol not in ("coco", "livecell"):
            raise InputError(f"--protocol must be coco or livecell, got {protocol!r}")
        if json:
            _output_file(json, overwrite, "--json")
        _print_json(evaluate_coco_files(_path(pred, "--pred"), _path(gt, "--gt"), iou_type=iou_type,
                                        protocol=protocol), json, overwrite)

    def image(self, pred: str, gt: str, json: str | None = None, normalize: bool = True, overwrite: bool = False):
        """MAE, MSE, PSNR, SSIM, Pearson, Euclidean and cosine distance after (2, 99.8) percentile normalisation."""
        from cellzoo.metrics.folders import evaluate_image_folders

        if json:
            _output_file(json, overwrite, "--json")
        _print_json(evaluate_image_folders(_path(pred, "--pred"), _path(gt, "--gt"),
                                           normalize=_flag(normalize, "--normalize")), json, overwrite)


class Benchmark:
    """Benchmarks across bundles."""

    def label_efficiency(self, quick: bool = False, seeds="0,1,2", out: str = "benchmark_output", tasks=None,
                         jobs: int = 2, realdata: str | None = None, docs: str | None = None, paper: bool = False):
        """Every bundle's study on shared tasks (nucleus instances, label-free -> fluorescence; real and
        synthetic) with the same test items and label budgets, plus cellpose from scratch on the nucleus
        tasks; resumes when run again.

        Every fine-tuning and pretraining of the quick networks trains until its validation score stops
        improving (--paper: the paper-scale configs, for a GPU). --quick is the smoke run: fixed tiny budgets,
        all four tasks, minutes instead of hours; its figures are not results.
        Writes <out>/label_efficiency.csv (task, method, arm, n, seed, metric, value), _times.csv, plots and
        <out>/label_efficiency.md (--docs FILE: also there, plots in images/ beside it). --tasks picks some
        of nuclei_real, nuclei_synthetic, labelfree_real, labelfree_synthetic (default: the real ones;
        --quick: all); --jobs studies run at once, one CPU thread each; --realdata is the folder of the real
        data sets (default: ../shared/realdata beside the repository; without it the synthetic tasks run).
        """
        from cellzoo.benchmarks import run_benchmark
        from cellzoo.bundles import bundles_dir

        if realdata is not None and not Path(_path(realdata, "--realdata")).is_dir():
            raise InputError("--realdata: folder not found", realdata)
        rows = run_benchmark(_path(out, "--out"), _int_list(seeds, "--seeds"), smoke=_flag(quick, "--quick"),
                             tasks=None if tasks is None else _name_list(tasks),
                             jobs=_number(jobs, "--jobs", int, minimum=1),
                             realdata=realdata if realdata is not None else bundles_dir().parents[1] / "shared" / "realdata",
                             docs=docs, paper=_flag(paper, "--paper"))
        if not rows:
            raise InputError("the benchmark produced no results (see the messages above)")
        print(f"{len(rows)} rows; report: {Path(str(out)) / 'label_efficiency.md'}" + (f" and {docs}" if docs else ""))


class CellzooCLI:
    """cellzoo: label-efficient cell microscopy bundles and tools."""

    def __init__(self):
        self.evaluate = Evaluate()
        self.benchmark = Benchmark()

    def list(self):
        """List the bundles, their task and the configs (tasks) each offers."""
        from cellzoo.bundles import bundles_dir, list_bundles
        from cellzoo.synthetic import LAYOUTS
        from cellzoo.synthetic.layouts import OTHER_LAYOUTS

        bundles = list_bundles()
        if not bundles:
            print(f"no bundles found in {bundles_dir()}")
        for info in bundles:
            print(f"{info['name']}  v{info['version']}  {info['task']}")
            print(f"    configs: {', '.join(info['configs'])}")
        print(f"synthetic layouts: {', '.join(LAYOUTS)}; natural-object images: {', '.join(OTHER_LAYOUTS)}")

    def synth(self, layout: str, n: int, out: str, seed: int = 0, size="256,256", depth: int | None = None):
        """Write a synthetic dataset with ground truth in a published layout.

        --layout cellseg|ctc|coco|lightmycells|isl, or objects (COCO-like natural-object images, the
        stand-in for COCO in CUPre studies); --n images (frames for ctc), --size H,W, --depth Z makes 3D
        stacks (ctc only).
        """
        from cellzoo.synthetic import LAYOUTS, synthesize
        from cellzoo.synthetic.layouts import OTHER_LAYOUTS

        if layout not in LAYOUTS + OTHER_LAYOUTS:
            raise InputError(f"--layout must be one of {', '.join(LAYOUTS + OTHER_LAYOUTS)}, got {layout!r}")
        n = _number(_whole_option(n, "--n"), "--n", int, minimum=1)
        seed = _number(_whole_option(seed, "--seed"), "--seed", int, minimum=0)
        options = {} if depth is None else {"depth": _number(_whole_option(depth, "--depth"), "--depth", int, minimum=2)}
        path = synthesize(layout, n, _path(out, "--out"), seed=seed, size=_parse_size(size), **options)
        print(f"wrote {layout} layout with n={n} (seed {seed}) to {path}")

    def measure(self, image: str, labels: str, out: str, overwrite: bool = False):
        """Per-cell measurements (centroid, area, bbox, shape, mean intensity per channel) as CSV."""
        from cellzoo.postprocess.measure import measure_files

        out = _output_file(out, overwrite, "--out")
        rows = measure_files(_path(image, "--image"), _path(labels, "--labels"), out)
        print(f"measured {len(rows)} cells -> {out}")

    def predict(self, bundle: str, input: str, output: str, checkpoint=None, quick: bool | None = None,
                overwrite: bool = False, set=None, region_size: int = 2048, halo: int = 128, level: int = 0):
        """Run a bundle's inference config on a folder of images with trained weights.

        An --input that is one OME-Zarr folder or one TIFF file is streamed instead (images larger than
        memory, docs/inference.md): read region by region (--region-size px plus --halo px of context, at
        pyramid --level), each region predicted and written into the OME-Zarr --output; resumable.

        --checkpoint takes one path, several separated by commas, or a list: several = an ensemble. Without
        it, the bundle's shipped weights (models/release.json: quick-trained, with the settings they need).
        --quick matches checkpoints trained with quick.yaml. A `.onnx` checkpoint (the `model.onnx` of the
        bundle's bioimage.io package, `cellzoo export-bioimageio`) runs in onnxruntime on the CPU instead of
        PyTorch. An output folder that already holds predictions is refused unless --overwrite (which
        replaces the files of the same names). --set "{task: cells, inputs: [DIC]}" sets keys of
        inference.yaml (values are data).
        """
        from cellzoo.bundles import run_config
        from cellzoo.inference import is_onnx
        from cellzoo.shipped_weights import shipped_weights
        from cellzoo.studies import load_study

        from cellzoo.io.lazy import is_lazy_input

        if is_lazy_input(_path(input, "--input")) or Path(input).suffix.lower() in (".tif", ".tiff", ".btf"):
            return self._predict_streamed(bundle, input, output, checkpoint, quick, overwrite, set, region_size,
                                          halo, level)
        if not Path(input).is_dir():
            raise InputError("input folder not found", input)
        overwrite = _flag(overwrite, "--overwrite")
        _check_prediction_folder(Path(_path(output, "--output")), overwrite, bundle)
        checkpoints, shipped_settings = _checkpoint_list(checkpoint), {}
        if not checkpoints:
            shipped = shipped_weights(bundle)
            if shipped is None:
                raise InputError(f"--checkpoint is required: {bundle} ships no trained weights (see docs/own_data.md)")
            checkpoints, shipped_settings = [str(shipped.checkpoint)], shipped.settings
            quick = shipped.quick if quick is None else quick
            print(f"using the shipped weights {shipped.record['checkpoint']} (sha256 {shipped.sha256[:12]})",
                  file=sys.stderr)
        quick = _flag(quick, "--quick") if quick is not None else False
        for path in checkpoints:
            if not Path(path).is_file():
                raise InputError("checkpoint not found" if not Path(path).exists() else "checkpoint is not a file", path)
        settings = {**shipped_settings, **_config_settings(set, bundle, "inference", quick)}
        onnx = [is_onnx(path) for path in checkpoints]
        if any(onnx) and not all(onnx):
            raise InputError("an ensemble takes only .onnx checkpoints or only PyTorch ones",
                             next(p for p, o in zip(checkpoints, onnx) if o))
        if any(onnx) and load_study(bundle).data["export_input"] is None:  # study.yaml: no ONNX form
            raise InputError(f"{bundle}'s network has no ONNX form (its outputs depend on the data); give a PyTorch "
                             "checkpoint", checkpoints[0])
        _run_with_fit_hint(lambda: run_config(bundle, "inference", quick=quick, **settings, input_dir=str(input),
                                              output_dir=str(output), checkpoints=checkpoints), bundle, quick, settings)
        print(f"predictions written to {output}")

    def _predict_streamed(self, bundle, input, output, checkpoint, quick, overwrite, set, region_size, halo, level):
        from cellzoo.inference.streaming import stream_predict

        checkpoints = _checkpoint_list(checkpoint)
        for path in checkpoints:
            if not Path(path).is_file():
                raise InputError("checkpoint not found", path)
        quick = None if quick is None else _flag(quick, "--quick")
        settings = _config_settings(set, bundle, "inference", bool(quick))
        summary = stream_predict(bundle, input, output, checkpoints or None, quick, settings,
                                 level=_whole_option(level, "--level"), region_size=_whole_option(region_size, "--region-size"),
                                 halo=_whole_option(halo, "--halo"), overwrite=_flag(overwrite, "--overwrite"))
        print(f"{summary['predicted']} of {summary['regions']} regions predicted ({summary['skipped_blank']} blank) "
              f"in {summary['seconds']:.0f} s -> {output}")

    def study(self, bundle: str, data: str, sizes="1,4,12", arms=None, seeds="0", task: str | None = None,
              quick: bool = False, out: str = "study", pretrain_data: str | None = None, n_test: int | None = None,
              set=None, pretrain_set=None, smoke: bool = False, pretrained_from: str | None = None,
              pretrain_only: bool = False):
        """Label-efficiency study of a bundle: arms x label budgets x seeds through the bundle's own configs.

        The bundle's configs/study.yaml declares its tasks, arms and key metric. DATA is a labelled data set
        in the bundle's layout: a fixed test set (--n-test items, default 20%) is drawn once; per seed the
        rest is shuffled and each size N trains on the first N (--sizes takes numbers of items, or
        fractions such as 0.05,0.2 of the training pool). Pretrainings run once per seed (--pretrain-data
        for those that train on another data set). Every training stops by its config's convergence rule
        (--quick: the CPU-sized networks; --smoke: study.yaml's fixed tiny budgets instead, a check that the
        steps run, not a result). Interrupted studies resume: run the same command again.
        Writes <out>/<task>/<bundle>_<task>.csv (bundle, task, arm, n, seed, metric, value), .png and .md.
        --set "{inputs: [DIC]}" sets keys of the bundle's configs for every step (values are data);
        --pretrain-set "{max_epochs: 100}" sets keys for the pretraining steps only, after --set.
        --pretrained-from OUT/TASK/seed0: every seed starts from the finished pretrainings of that seed folder
        of an earlier study (same data and test items) instead of pretraining per seed; --pretrain-only runs
        the pretrainings and stops.
        """
        from cellzoo.studies import load_study, markdown_table, run_study, write_report

        spec = load_study(bundle).task(task)
        quick, smoke = _flag(quick, "--quick"), _flag(smoke, "--smoke")
        pretrain_only = _flag(pretrain_only, "--pretrain-only")
        settings = _config_settings(set, bundle, spec.finetune.config, quick)
        pretrain_settings = _pretrain_settings(pretrain_set, bundle, spec, quick)
        rows = run_study(bundle, _path(data, "--data"), _float_list(sizes, "--sizes"),
                         arms=None if arms is None else _name_list(arms), seeds=_int_list(seeds, "--seeds"),
                         task=spec.name, quick=quick, out=_path(out, "--out"),
                         pretrain_data=None if pretrain_data is None else _path(pretrain_data, "--pretrain-data"),
                         n_test=None if n_test is None else int(n_test), settings=settings,
                         pretrain_settings=pretrain_settings, smoke=smoke,
                         pretrained_from=None if pretrained_from is None else _path(pretrained_from, "--pretrained-from"),
                         pretrain_only=pretrain_only)
        if pretrain_only:
            print(f"pretrainings done: {Path(str(out)) / spec.name}")
            return
        files = write_report(rows, spec.metric, Path(str(out)) / spec.name, f"{Path(str(bundle)).name}_{spec.name}")
        print(markdown_table(rows, spec.metric), end="")
        print("written: " + ", ".join(str(path) for path in files.values()))

    def export_bioimageio(self, bundle: str, checkpoint: str | None = None, out: str = "bioimageio", quick: bool = False,
                          set=None, validate: bool = True, overwrite: bool = False):
        """A trained network as a BioImage Model Zoo package: <out>/<bundle>/ (folder) and <out>/<bundle>.zip.

        The package (model description 0.5) holds the state dict with its cellzoo architecture, TorchScript and
        ONNX weights where they reproduce the network, the bundle's normalisation as preprocessing, test input
        and output, a cover, the model card with what the raw outputs mean and which cellzoo function
        post-processes them. --quick for checkpoints trained with quick.yaml; --set as for predict (e.g. ISL's
        task). The package is then tested with bioimageio.core (--validate false skips it).
        """
        try:
            from cellzoo.export.bioimageio import export_bioimageio, validate as test_package
        except ImportError as err:
            raise InputError(f"the export needs bioimageio.core and onnx ({err.name} is missing): "
                             "pip install 'cellzoo[export]'") from err

        if checkpoint is None:
            raise InputError("--checkpoint is required: the package holds trained weights")
        if not Path(str(checkpoint)).is_file():
            raise InputError("checkpoint not found", checkpoint)
        target = Path(_path(out, "--out"))
        if ((target / str(bundle)).exists() or (target / f"{bundle}.zip").exists()) and not _flag(overwrite, "--overwrite"):
            raise InputError(f"{target / str(bundle)} already exists; pass --overwrite to replace it")
        quick = _flag(quick, "--quick")
        settings = _config_settings(set, bundle, "inference", quick)
        paths = _run_with_fit_hint(lambda: export_bioimageio(bundle, checkpoint, target, quick=quick, settings=settings),
                                   bundle, quick, settings)
        print(f"package: {paths['zip']} (folder {paths['folder']})")
        if _flag(validate, "--validate"):
            summary = test_package(paths["zip"])
            failed = [d for d in summary.details if d.status == "failed"]
            print(f"bioimageio.core test: {summary.status} ({len(summary.details)} checks, {len(failed)} failed)")
            for detail in failed:
                print(f"  failed: {detail.name}: {'; '.join(e.msg for e in detail.errors)[:300]}")
            if failed:
                sys.exit(1)

    def package(self, bundle: str, out: str, large_file_mb: float = 25, base_url: str | None = None,
                checkpoint: str | None = None):
        """Zip a bundle as <out>/<name>_v<version>.zip for `python -m monai.bundle download`.

        --checkpoint PATH ships that trained model.pt at the path the bundle's inference reads (e.g.
        models/detection/model.pt for PMC) in place of the shipped weights; the bundle folder is unchanged.

        Files over --large-file-mb MB stay out of the zip: they are copied to <name>_v<version>_files/ and
        listed in the zip's large_files.yml under --base-url, the http(s) address where you will publish
        them (required when there are such files).
        """
        from cellzoo.packaging import listed_large_files, package_bundle

        if float(large_file_mb) <= 0:
            raise InputError(f"--large-file-mb must be positive, got {large_file_mb}")
        zip_path = package_bundle(str(bundle), str(out), large_file_mb=float(large_file_mb),
                                  base_url=None if base_url is None else str(base_url),
                                  checkpoint=None if checkpoint is None else _path(checkpoint, "--checkpoint"))
        print(zip_path)
        for entry in listed_large_files(zip_path):
            print(f"large file {entry['path']} -> {entry['url']}")

    def install(self, source: str, bundle_dir: str, sha256: str | None = None, max_size_mb: float = 2048,
                max_ratio: float = 200):
        """Download (URL) or read (path) a bundle zip, check hash and entries, extract and fetch large files.

        --sha256 HEX refuses a zip whose sha256 differs; nothing is written unless every check passes, and a
        failed install leaves nothing behind. --max-size-mb (total uncompressed size) and --max-ratio (per
        entry, uncompressed / compressed) refuse zip bombs; raise them for a zip you trust.
        """
        import re

        from cellzoo.packaging import install_bundle

        # fire turns an all-digit value into a number, so a hex digest is checked as text here
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
            raise InputError(f"--sha256 must be 64 hex digits (quote it), got {sha256!r}")
        print(install_bundle(_path(source, "source"), _path(bundle_dir, "--bundle-dir"),
                             sha256=None if sha256 is None else str(sha256),
                             max_size_mb=_number(max_size_mb, "--max-size-mb", float, 0, exclusive=True),
                             max_ratio=_number(max_ratio, "--max-ratio", float, 0, exclusive=True)))

    def demo(self, out: str = "demo_output", seed: int = 0):
        """Quick-train MEDIAR on synthetic images (CPU, minutes), segment held-out ones and print their F1."""
        from cellzoo.demo import run_demo

        run_demo(str(out), seed=int(seed))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `cellzoo` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv in (["--help"], ["-h"]):
        argv = []  # Fire's `--help` on the top class shows its constructor; a bare call lists the commands
    try:
        fire.Fire(CellzooCLI, command=argv, name="cellzoo")
    except KeyboardInterrupt:
        if debug:
            raise
        print("cellzoo: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - bad input and unwritable outputs get one line, bugs a traceback
        message = user_error_message(err)
        if debug or message is None:
            raise
        # an error from inside a bundle run may interrupt a progress bar mid-line: start a new line
        print(("" if isinstance(err, InputError) else "\n") + f"cellzoo: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
