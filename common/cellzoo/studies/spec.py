"""A bundle's study declaration, `configs/study.yaml`: per task the configs that pretrain, fine-tune and
evaluate, the labelled units the label budgets count, the key metric and the arms compared.

An arm is a name, the pretraining whose checkpoint initialises the fine-tuning (none: from scratch) and
any fine-tuning overrides (a frozen backbone, a replay set ...). Pretrainings are named once per task so
that several arms share one pretraining run (it runs once per seed, never once per label budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cellzoo.bundles import bundle_path
from cellzoo.errors import InputError

STUDY_FILE = "study.yaml"
# where a pretraining takes its data: the study's own training pool (labels unused, a label-free
# pretext) or the separate folder given with --pretrain-data (e.g. labelled public data)
PRETRAIN_DATA = ("pool", "pretrain_data")
STEP_KINDS = ("pretrain", "finetune", "evaluate")


@dataclass(frozen=True)
class Step:
    """One run of a bundle config: its name in configs/ and the overrides the study adds."""

    config: str
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pretraining(Step):
    """A pretraining step, where its data comes from (one of PRETRAIN_DATA) and the pretraining whose
    checkpoint initialises it (`init`: None, or another pretraining of the task, which then runs first)."""

    data: str = "pool"
    init: str | None = None


@dataclass(frozen=True)
class Arm:
    """A compared variant: the pretraining that initialises it (None: scratch) and its fine-tuning overrides."""

    name: str
    init: str | None = None
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """Everything the study runs for one task of a bundle."""

    name: str
    units: str
    metric: str
    finetune: Step
    evaluate: Step
    pretrainings: dict[str, Pretraining]
    arms: dict[str, Arm]
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """A bundle's study.yaml: its tasks, the fixed budgets --smoke adds per step kind, and its data layout."""

    bundle: str
    tasks: dict[str, TaskSpec]
    smoke: dict[str, dict]
    data: dict

    def task(self, name: str | None) -> TaskSpec:
        """The named task; without a name, the bundle's only (or first) task."""
        if name is None:
            return next(iter(self.tasks.values()))
        if name not in self.tasks:
            raise InputError(f"bundle '{self.bundle}' has no study task {name!r} (tasks: {', '.join(self.tasks)})")
        return self.tasks[name]


# what a bundle reads and writes, for the commands and tests that run it without knowing it:
# layout: the `cellzoo synth` layout of its data; inference_input: the folder of that layout inference reads
# ("" = the data folder itself); inference_output: the glob of the prediction files inference writes (what
# `cellzoo predict` protects from overwriting); export_input: the network's input shape for TorchScript/ONNX
# export, or null when its output is not one tensor (no ONNX form: CUPre's detector)
DATA_KEYS = ("layout", "inference_input", "inference_output", "export_input")


def load_study(bundle: str | Path) -> StudySpec:
    """Read and check `configs/study.yaml` of a bundle (by name or path)."""
    root = bundle_path(bundle)
    path = root / "configs" / STUDY_FILE
    if not path.is_file():
        raise InputError(f"bundle '{root.name}' declares no study (configs/{STUDY_FILE})", path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"invalid YAML ({err})", path) from err
    try:
        return _parse(root.name, raw)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"invalid study declaration: {err}", path) from err


def _parse(bundle: str, raw: dict) -> StudySpec:
    tasks = {name: _task(name, body) for name, body in _mapping(raw, "tasks").items()}
    if not tasks:
        raise ValueError("no tasks")
    smoke = {kind: dict(values or {}) for kind, values in (raw.get("smoke") or {}).items()}
    unknown = set(smoke) - set(STEP_KINDS)
    if unknown:
        raise ValueError(f"smoke: unknown step kinds {sorted(unknown)} (use {', '.join(STEP_KINDS)})")
    data = dict(raw.get("data") or {})
    missing = [key for key in DATA_KEYS if key not in data]
    if missing:
        raise ValueError(f"data: missing {', '.join(missing)} (every bundle declares {', '.join(DATA_KEYS)})")
    return StudySpec(bundle, tasks, smoke, data)


def _mapping(raw: dict, key: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise TypeError(f"'{key}' must be a mapping")
    return value


def _step(raw: dict) -> Step:
    return Step(str(raw["config"]), dict(raw.get("overrides") or {}))


def _task(name: str, raw: dict) -> TaskSpec:
    pretrainings = {}
    for pre_name, body in _mapping(raw, "pretrainings").items():
        data = body.get("data", "pool")
        if data not in PRETRAIN_DATA:
            raise ValueError(f"task {name}, pretraining {pre_name}: data must be one of {PRETRAIN_DATA}")
        pretrainings[pre_name] = Pretraining(str(body["config"]), dict(body.get("overrides") or {}), data,
                                             body.get("init"))
    for pre_name, pre in pretrainings.items():  # chains of pretrainings must end, in one of the task's
        seen = [pre_name]
        while pretrainings[seen[-1]].init is not None:
            init = pretrainings[seen[-1]].init
            if init not in pretrainings or init in seen:
                raise ValueError(f"task {name}, pretraining {pre_name}: init {init!r} is not another of its "
                                 "pretrainings (or the chain is circular)")
            seen.append(init)
    arms = {}
    for arm_name, body in _mapping(raw, "arms").items():
        body = body or {}
        init = body.get("init")
        if init is not None and init not in pretrainings:
            raise ValueError(f"task {name}, arm {arm_name}: init {init!r} is not one of its pretrainings")
        arms[arm_name] = Arm(arm_name, init, dict(body.get("overrides") or {}))
    if not arms:
        raise ValueError(f"task {name} has no arms")
    return TaskSpec(name, str(raw.get("units", "labelled images")), str(raw["metric"]), _step(raw["finetune"]),
                    _step(raw["evaluate"]), pretrainings, arms, dict(raw.get("overrides") or {}))
