"""The label-efficiency study engine: arms x label budgets x seeds for any bundle, through its own configs.

For one task of a bundle (declared in its `configs/study.yaml`, see `cellzoo.studies.spec`):

1. The labelled items of the data folder are listed by the fine-tuning config itself (its `datalist`), and a
   fixed test set is drawn once (`split_seed`), the same for every seed, arm and budget.
2. Per seed, the remaining labelled items (the pool) are shuffled; a budget of N trains on the first N, so
   the training sets of one seed are nested, as in the papers' few-shot protocols.
3. Per seed, each pretraining an arm needs runs once (on every item of the data set but the test items,
   labelled or not, since it uses no labels; or on `--pretrain-data`); then per budget and arm the
   fine-tuning config trains from the arm's initial weights (`init_ckpt`) and the evaluation config scores
   the test items (`<output_dir>/metrics.json`). A study can instead take its pretrainings from another
   study's seed folder (`pretrained_from`: one pretraining shared by the seeds, as the benchmark does), or
   run its pretrainings only (`pretrain_only`).

Every step writes into `<out>/<task>/seed<k>/...`; a finished step leaves a marker, so an interrupted study
run again with the same arguments skips what is done. The result is a long table (bundle, task, arm, n,
seed, metric, value); `cellzoo.studies.report` turns it into the CSV, the plot and the markdown table.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cellzoo.bundles import parse_config_value, run_config
from cellzoo.errors import InputError
from cellzoo.studies.spec import Pretraining, TaskSpec, load_study

logger = logging.getLogger(__name__)

MANIFEST = "study.json"
DONE = "done.json"
RESULT = "result.json"


@dataclass(frozen=True)
class Study:
    """What one `cellzoo study` call runs."""

    bundle: str
    task: TaskSpec
    data: Path
    sizes: tuple[int, ...]
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    quick: bool
    out: Path
    smoke_overrides: dict  # study.yaml `smoke:` with --smoke: fixed tiny budgets instead of the convergence rule
    pretrain_data: Path | None = None
    settings: dict = field(default_factory=dict)  # the user's --set values, for every step
    pretrain_settings: dict = field(default_factory=dict)  # --pretrain-set values, for pretraining steps only
    pretrained_from: Path | None = None  # a seed folder of another study whose pretrainings every seed starts from
    pretrain_only: bool = False  # run the pretrainings, no fine-tuning


def run_study(bundle: str, data: str | Path, sizes: Sequence[float], arms: Sequence[str] | None = None,
              seeds: Sequence[int] = (0,), task: str | None = None, quick: bool = False, out: str | Path = "study",
              pretrain_data: str | Path | None = None, n_test: int | None = None, split_seed: int = 0,
              settings: dict | None = None, pretrain_settings: dict | None = None, smoke: bool = False,
              pretrained_from: str | Path | None = None, pretrain_only: bool = False) -> list[dict]:
    """Run (or resume) a study; returns its rows {bundle, task, arm, n, seed, metric, value}.

    `sizes` are label budgets: numbers of labelled items, or fractions (0 < f < 1) of the training pool.
    `settings` are config values for every step (e.g. the input planes of a data set), `pretrain_settings`
    for the pretraining steps only, after `settings` (e.g. a longer pretraining). Every training stops by
    its config's convergence rule; `smoke` (implies `quick`) replaces it by the fixed tiny budgets of
    study.yaml's `smoke:` section, a check that the steps run, not a result. `pretrained_from`: a seed
    folder (`<out>/<task>/seed<k>`) of a study of the same bundle, data and test split, whose finished
    pretrainings every seed's arms start from instead of pretraining per seed; `pretrain_only`: run the
    pretrainings and stop (no rows).
    """
    spec = load_study(bundle)
    task_spec = spec.task(task)
    study = Study(spec.bundle, task_spec, Path(data).absolute(), (), _check_arms(task_spec, arms),
                  tuple(dict.fromkeys(int(s) for s in seeds)), bool(quick or smoke), Path(out).absolute() / task_spec.name,
                  spec.smoke if smoke else {}, None if pretrain_data is None else Path(pretrain_data).absolute(),
                  dict(settings or {}), dict(pretrain_settings or {}),
                  None if pretrained_from is None else Path(pretrained_from).absolute(), bool(pretrain_only))
    if study.pretrained_from is None:
        _check_pretrain_data(study)
    test, pool = split_test(labelled_items(study), n_test, split_seed, study.data)
    study = replace(study, sizes=label_budgets(sizes, len(pool), task_spec.units, len(test)))
    _check_manifest(study, test)
    logger.info("study %s/%s: %d test items, pool of %d, sizes %s, arms %s, seeds %s", study.bundle,
                task_spec.name, len(test), len(pool), list(study.sizes), list(study.arms), list(study.seeds))
    progress = Progress(_step_count(study))
    rows = []
    for seed in study.seeds:
        order = training_order(pool, seed)
        checkpoints: dict[str, Path] = {}
        for name in _pretrainings_needed(study):  # a pretraining's own init comes before it
            checkpoints[name] = pretrain(study, name, seed, test, progress, checkpoints)
        if study.pretrain_only:
            continue
        for n in study.sizes:
            for arm in study.arms:
                rows += fine_tune_and_score(study, arm, n, seed, order[:n], test, checkpoints, progress)
    return rows


def training_order(pool: list[str], seed: int) -> list[str]:
    """The pool shuffled by `seed`: a budget of N trains on the first N (nested training sets per seed)."""
    return random.Random(seed).sample(pool, len(pool))


def label_budgets(sizes: Sequence[float], pool: int, units: str = "items", n_test: int = 0) -> tuple[int, ...]:
    """Numbers of labelled items to train on: whole numbers as they are, fractions (0 < f < 1) of the pool."""
    budgets = set()
    for size in sizes:
        size = float(size)
        if 0 < size < 1:
            budgets.add(max(1, round(size * pool)))
        elif size >= 1 and size == int(size):
            budgets.add(int(size))
        else:
            raise InputError(f"--sizes takes whole numbers of {units} or fractions in (0, 1), got {size:g}")
    if not budgets or max(budgets) > pool:
        raise InputError(f"--sizes must lie in 1..{pool} (labelled {units} outside the {n_test} test items), "
                         f"got {sorted(budgets)}")
    return tuple(sorted(budgets))


def _check_arms(task: TaskSpec, arms: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(task.arms) if not arms else tuple(dict.fromkeys(arms))
    unknown = [a for a in chosen if a not in task.arms]
    if unknown:
        raise InputError(f"unknown arm(s) {', '.join(unknown)} for task {task.name} (arms: {', '.join(task.arms)})")
    return chosen


def _pretrainings_needed(study: Study) -> list[str]:
    """The pretrainings the chosen arms start from, each preceded by the pretraining it starts from."""
    needed: list[str] = []
    for arm in study.arms:
        chain, name = [], study.task.arms[arm].init
        while name is not None:
            chain.insert(0, name)
            name = study.task.pretrainings[name].init
        needed += [name for name in chain if name not in needed]
    return needed


def _check_pretrain_data(study: Study) -> None:
    needs = [n for n in _pretrainings_needed(study) if study.task.pretrainings[n].data == "pretrain_data"]
    if needs and study.pretrain_data is None:
        raise InputError(f"the pretraining {needs[0]!r} of {study.bundle} trains on a separate data set: "
                         "pass --pretrain-data DIR")


def labelled_items(study: Study) -> list[str]:
    """Names of the labelled items the fine-tuning config finds in the data folder (its `datalist`)."""
    overrides = {**study.task.overrides, **study.task.finetune.overrides, **study.settings,
                 "dataset_dir": str(study.data)}
    entries = parse_config_value(study.bundle, study.task.finetune.config, "datalist", quick=study.quick, **overrides)
    names = sorted({str(entry["name"]) for entry in entries})
    if len(names) < 2:
        raise InputError(f"a study needs at least 2 labelled {study.task.units} (one to test), found {len(names)}",
                         study.data)
    return names


def split_test(names: list[str], n_test: int | None, split_seed: int, data: Path) -> tuple[list[str], list[str]]:
    """(test items, training pool): a fixed test set (default 20%, at least 1) drawn with `split_seed`.

    The draw depends on the set of names, not their order, so that the benchmark (which lists its images by
    source) and a study (which lists its datalist) draw the same test items."""
    shuffled = random.Random(split_seed).sample(sorted(names), len(names))
    n_test = max(1, len(names) // 5) if n_test is None else int(n_test)
    if not 0 < n_test < len(names):
        raise InputError(f"need 1 <= n_test < {len(names)} (the labelled items found), got {n_test}", data)
    return sorted(shuffled[:n_test]), shuffled[n_test:]


def _check_manifest(study: Study, test: list[str]) -> None:
    """Refuse to resume into a folder that holds a study with another data set, test split or size setting."""
    manifest = {"bundle": study.bundle, "task": study.task.name, "data": str(study.data), "test_items": test,
                "quick": study.quick, "pretrain_data": None if study.pretrain_data is None else str(study.pretrain_data),
                "settings": study.settings}
    if study.pretrain_settings:  # only when given, so folders of studies without them still resume
        manifest["pretrain_settings"] = study.pretrain_settings
    if study.pretrained_from is not None:
        manifest["pretrained_from"] = str(study.pretrained_from)
    if study.smoke_overrides:
        manifest["smoke"] = True
    path = study.out / MANIFEST
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(manifest) | set(previous) if previous.get(k) != manifest.get(k))
        if changed:
            raise InputError(f"this folder holds a study with other settings ({', '.join(changed)}); "
                             "use another --out or remove it", path.parent)
    else:
        _write_json(path, manifest)


def _step_count(study: Study) -> int:
    fine_tunings = 0 if study.pretrain_only else len(study.sizes) * len(study.arms)
    return len(study.seeds) * (len(_pretrainings_needed(study)) + fine_tunings)


class Progress:
    """`[k/N] what` lines on stderr, one per study step (each step is a whole training or evaluation)."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def step(self, what: str, skipped: bool = False) -> None:
        self.done += 1
        suffix = " (done before, skipped)" if skipped else ""
        print(f"[{self.done}/{self.total}] {what}{suffix}", file=sys.stderr, flush=True)


def _overrides(study: Study, kind: str, step_overrides: dict, arm_overrides: dict, run: dict) -> dict:
    """Task, step, --smoke, arm, --set (and for pretraining --pretrain-set) overrides, then the run's own keys (data, items, seed, folders);
    later ones win; placeholders filled."""
    merged = {**study.task.overrides, **step_overrides, **study.smoke_overrides.get(kind, {}), **arm_overrides,
              **study.settings, **(study.pretrain_settings if kind == "pretrain" else {}), **run}
    return fill_placeholders(merged, {"{data}": str(study.data), "{pretrain_data}": str(study.pretrain_data)})


def fill_placeholders(values: dict, fill: dict[str, str]) -> dict:
    """study.yaml values that are exactly a placeholder (`{data}`: the study's data folder) replaced by its
    text; every other value as it is."""
    return {key: fill.get(value, value) if isinstance(value, str) else value for key, value in values.items()}


def pretrain(study: Study, name: str, seed: int, test: list[str], progress: Progress,
             checkpoints: dict[str, Path] | None = None) -> Path:
    """Run the pretraining `name` for `seed` (once: later calls find its marker); returns its model.pt.

    A pretraining on the pool takes every item of the data set but the test items, labelled or not (its
    labels are not used); one with `data: pretrain_data` takes the --pretrain-data folder as it is. One
    with `init` starts from that pretraining's checkpoint (in `checkpoints`, run before it).
    """
    if study.pretrained_from is not None:
        return shared_pretraining(study, name, seed, test, progress)
    step: Pretraining = study.task.pretrainings[name]
    folder = study.out / f"seed{seed}" / f"pretrain_{name}"
    what = f"seed {seed}: pretraining '{name}' ({step.config})"
    if (folder / DONE).is_file():
        progress.step(what, skipped=True)
        return folder / "model.pt"
    progress.step(what)
    data = {"dataset_dir": str(study.data), "exclude_items": test} if step.data == "pool" else \
        {"dataset_dir": str(study.pretrain_data)}
    run = {**data, "seed": seed, "ckpt_dir": str(folder), "output_dir": str(folder / "runs")}
    if step.init is not None:
        run["init_ckpt"] = str((checkpoints or {})[step.init])
    started = time.perf_counter()
    run_config(study.bundle, step.config, quick=study.quick, **_overrides(study, "pretrain", step.overrides, {}, run))
    _require(folder / "model.pt", what)
    _write_json(folder / DONE, {"pretraining": name, "seed": seed, "excluded": test if step.data == "pool" else [],
                                "minutes": (time.perf_counter() - started) / 60})
    return folder / "model.pt"


def shared_pretraining(study: Study, name: str, seed: int, test: list[str], progress: Progress) -> Path:
    """The finished pretraining `name` in `study.pretrained_from`, checked to have left out this study's test items."""
    folder = study.pretrained_from / f"pretrain_{name}"
    if not (folder / DONE).is_file() or not (folder / "model.pt").is_file():
        raise InputError(f"no finished pretraining {name!r} there (its {DONE} and model.pt)", folder)
    done = json.loads((folder / DONE).read_text())
    if study.task.pretrainings[name].data == "pool" and sorted(done["excluded"]) != sorted(test):
        raise InputError(f"the pretraining {name!r} there left out {done['excluded']}, not this study's test "
                         f"items {test}", folder)
    progress.step(f"seed {seed}: pretraining '{name}' shared from {folder}")
    return folder / "model.pt"


def fine_tune_and_score(study: Study, arm: str, n: int, seed: int, train: list[str], test: list[str],
                        checkpoints: dict[str, Path], progress: Progress) -> list[dict]:
    """Fine-tune arm `arm` on `train` and score it on `test`; returns its rows (read back when done before)."""
    folder = study.out / f"seed{seed}" / arm / f"n{n}"
    what = f"seed {seed}: arm '{arm}', N={n}"
    if (folder / RESULT).is_file():
        progress.step(what, skipped=True)
        return json.loads((folder / RESULT).read_text())["rows"]
    progress.step(what)
    spec = study.task.arms[arm]
    init = None if spec.init is None else str(checkpoints[spec.init])
    # model selection on the training items themselves: with N = 1 there is no labelled item to spare
    run = {"dataset_dir": str(study.data), "train_items": train, "val_items": train, "init_ckpt": init,
           "seed": seed, "ckpt_dir": str(folder), "output_dir": str(folder / "runs")}
    step = study.task.finetune
    started = time.perf_counter()
    run_config(study.bundle, step.config, quick=study.quick,
               **_overrides(study, "finetune", step.overrides, spec.overrides, run))
    minutes = (time.perf_counter() - started) / 60
    _require(folder / "model.pt", what)
    metrics = evaluate(study, folder / "model.pt", test, folder / "eval")
    rows = [{"bundle": study.bundle, "task": study.task.name, "arm": arm, "n": n, "seed": seed, "metric": name,
             "value": value} for name, value in metrics.items()]
    _write_json(folder / RESULT, {"init_ckpt": init, "train_items": train, "rows": rows, "minutes": minutes})
    logger.info("%s: %s = %.4f", what, study.task.metric, metrics[study.task.metric])
    return rows


def evaluate(study: Study, checkpoint: Path, test: list[str], out: Path) -> dict[str, float]:
    """Run the evaluation config on the test items; returns the numeric entries of its metrics.json."""
    step = study.task.evaluate
    run = {"dataset_dir": str(study.data), "eval_items": test, "checkpoints": [str(checkpoint)], "output_dir": str(out)}
    run_config(study.bundle, step.config, quick=study.quick, **_overrides(study, "evaluate", step.overrides, {}, run))
    report = json.loads(_require(out / "metrics.json", "evaluation").read_text())
    metrics = {k: v for k, v in report.items() if isinstance(v, float)}  # scores, not counts or settings
    if study.task.metric not in metrics:
        raise InputError(f"the evaluation wrote no {study.task.metric!r} (found: {', '.join(metrics)})", out)
    return metrics


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise RuntimeError(f"{what} finished without writing {path}")
    return path


def _write_json(path: Path, content: dict) -> None:
    """Write JSON atomically: a marker is either complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)
