"""`cellzoo benchmark label-efficiency`: every bundle's study on shared tasks, with the same splits and budgets.

Each bundle declares in the `benchmark:` section of its configs/study.yaml which kinds of shared task it
takes part in ("nuclei": nucleus instances; "labelfree": label-free -> fluorescence), with which of its
study tasks and arms, in which layout the images are written for it, and how the names of its
metrics.json map onto the benchmark's common metrics. The benchmark

1. writes each task's samples (cellzoo.benchmarks.samples) in every layout a taking-part bundle reads,
   with the same item names everywhere, so one split seed gives every bundle the same test items and the
   same nested training sets (checked against each study's manifest afterwards);
2. runs `cellzoo study --quick` once per (task, bundle, seed) in its own process and folder, `jobs` at a
   time, one CPU thread each, the costliest first (per seed rather than per study, so that the two slots end
   together: one study's three seeds in one process would leave a slot idle for an hour); an interrupted
   benchmark resumes: the studies skip their finished steps. A bundle's pretrainings run once, as a job of
   their own started first (`cellzoo study --pretrain-only`, with the first seed), and the seeds'
   fine-tunings start from them (`--pretrained-from`): the seeds vary the training sets and the fine-tuning,
   not the pretraining, which would otherwise be a third of PMC's cost three times. Every fine-tuning and
   pretraining trains the quick network until its validation score stops improving (each config's
   convergence rule, the same for every method and arm); `smoke` instead gives them study.yaml's fixed tiny
   budgets, a check for CI that every step runs, whose figures are not results;
3. on the nucleus tasks, runs the peer a user would otherwise pick: cellpose from scratch under the same
   rule (cellpose_peer.py), when cellpose is installed beside the project;
4. gathers the rows into one long CSV with the common metric names, the wall time of every fine-tuning and
   pretraining, and writes the report (report.py) with the training curves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cellzoo.benchmarks import samples as shared
from cellzoo.benchmarks.claims import CLAIMS, KINDS, Claim
from cellzoo.benchmarks.layouts import item_name, write_layout
from cellzoo.benchmarks.report import write_benchmark_report
from cellzoo.bundles import bundles_dir
from cellzoo.engines.convergence import SUMMARY
from cellzoo.errors import InputError
from cellzoo.studies.engine import MANIFEST, fill_placeholders, split_test

__all__ = ["CLAIMS", "KINDS", "TASKS", "Claim", "Job", "Task", "plan_jobs", "run_benchmark"]

SPLIT_SEED = 0
# without --tasks: the converged benchmark runs the real tasks (hours on 2 CPU cores: README.md), the smoke
# run all four
DEFAULT_TASKS = ("nuclei_real", "labelfree_real")


@dataclass(frozen=True)
class Task:
    """A shared task: its kind, where its samples come from, the test items and the label budgets."""

    name: str
    kind: str
    real: bool
    n_test: int
    sizes: tuple[int, ...]
    description: str


# budgets: the nucleus tasks stop at 4 labelled images to keep `make benchmark` within an hour on 2 CPU cores
# (their detectors cost the most per run); the label-free ones go to 12
TASKS = {
    "nuclei_real": Task("nuclei_real", "nuclei", True, 5, (1, 4),
                        "nucleus instances on 17 real fluorescence images (DSB2018 stage-1 test fluorescence, "
                        "Fluo-N2DL-HeLa, Fluo-N2DH-GOWT1); unlabelled: the same images and 20 GOWT1 time-lapse frames"),
    "nuclei_synthetic": Task("nuclei_synthetic", "nuclei", False, 4, (1, 4),
                             "nucleus instances on 16 synthetic fluorescence fields of 192 px; unlabelled: 16 more"),
    "labelfree_real": Task("labelfree_real", "labelfree", True, 4, (1, 4, 12),
                           "phase contrast (3 focal planes) -> DAPI on the In Silico Labeling field cut into 16 "
                           "tiles of 256 px"),
    "labelfree_synthetic": Task("labelfree_synthetic", "labelfree", False, 4, (1, 4, 12),
                                "phase contrast (3 focal planes) -> nuclear stain on 16 synthetic fields of 192 px"),
}


# MEDIAR pretrains on labelled public data, CUPre on a natural-image COCO set: the benchmark's stand-ins
PRETRAIN_DATA = ("labelled_nuclei", "objects")


@dataclass(frozen=True)
class Entry:
    """What a bundle declares for one kind of task (study.yaml `benchmark:`)."""

    bundle: str
    kind: str
    study_task: str
    layout: str
    arms: tuple[str, ...]
    metrics: dict[str, str]
    pretrain_data: str | None = None
    settings: dict = field(default_factory=dict)
    pretrain_settings: dict = field(default_factory=dict)
    relative_cost: int = 1
    # study.yaml `rule`: the benchmark's convergence cadence (validation interval, patience), given to every
    # step of its studies only: trainings outside the benchmark (the shipped weights) keep their own
    rule: dict = field(default_factory=dict)  # study.yaml `relative_cost`: the costliest studies start first


@dataclass(frozen=True)
class Job:
    """One `cellzoo study` run: a bundle's entry on a task, with its data folder and output folder."""

    task: Task
    entry: Entry
    data: Path
    out: Path
    pretrain_data: Path | None
    test_items: tuple[str, ...]
    seed: int = 0
    pretrain_only: bool = False  # the entry's pretrainings, shared by its seeds' jobs
    pretrained_from: Path | None = None  # the seed folder of the pretraining job this one starts from
    after: str | None = None  # the label of the job that must finish first (that pretraining job)

    @property
    def label(self) -> str:
        step = "pretraining, " if self.pretrain_only else ""
        return f"{self.entry.bundle} on {self.task.name} ({step}seed {self.seed})"


def bundle_entries() -> list[Entry]:
    """Every bundle's `benchmark:` declarations, checked against the kinds and the bundle's study tasks."""
    from cellzoo.studies import load_study

    entries = []
    for study_file in sorted(bundles_dir().glob("*/configs/study.yaml")):
        bundle = study_file.parents[1].name
        declared = (yaml.safe_load(study_file.read_text()) or {}).get("benchmark") or {}
        spec = load_study(bundle)
        for kind, body in declared.items():
            if kind not in KINDS:
                raise InputError(f"benchmark: unknown kind {kind!r} (kinds: {', '.join(KINDS)})", study_file)
            task = spec.task(body["study_task"])
            entry = Entry(bundle, kind, task.name, str(body["layout"]), tuple(body["arms"]), dict(body["metrics"]),
                          body.get("pretrain_data"), dict(body.get("settings") or {}),
                          dict(body.get("pretrain_settings") or {}), int(body.get("relative_cost", 1)),
                          dict(body.get("rule") or {}))
            unknown = sorted(set(entry.arms) - set(task.arms))
            metrics_ok = KINDS[kind][0] in entry.metrics and set(entry.metrics) <= set(KINDS[kind])
            if unknown or not metrics_ok or entry.pretrain_data not in (None, *PRETRAIN_DATA):
                raise InputError(f"benchmark.{kind}: arms must be among {sorted(task.arms)}, metrics must map "
                                 f"{KINDS[kind][0]} and any of {KINDS[kind][1:]}, pretrain_data one of "
                                 f"{PRETRAIN_DATA}", study_file)
            entries.append(entry)
    return entries


def peer_entries() -> list[Entry]:
    """cellpose from scratch on the nucleus tasks, when installed beside the project (else a note on stderr)."""
    from cellzoo.benchmarks.cellpose_peer import PEER, TASK, cellpose_path

    if cellpose_path() is None:
        print("cellpose is not installed beside the project (scripts/install_cellpose_reference.sh): no peer row",
              file=sys.stderr)
        return []
    return [Entry(PEER, "nuclei", TASK, "cellseg", ("scratch",), {m: m for m in KINDS["nuclei"]}, relative_cost=2)]


def _samples(task: Task, realdata: Path) -> tuple[list, list]:
    if task.kind == "nuclei":
        return shared.real_nuclei(realdata) if task.real else shared.synthetic_nuclei(16, 16, seed=1)
    return (shared.real_labelfree(realdata) if task.real else shared.synthetic_labelfree(16, seed=2)), []


def _prepared(folder: Path, write) -> Path:
    """`folder`, written by `write(folder)` unless an earlier run finished it (its marker file exists)."""
    marker = folder / ".complete"
    if not marker.is_file():
        write(folder)
        marker.write_text("written by cellzoo benchmark label-efficiency\n")
    return folder


def _pretrain_folder(kind: str, out: Path) -> Path:
    """The stand-in pretraining sets: labelled synthetic nuclei (MEDIAR's public data), natural objects (CUPre)."""
    folder = out / "data" / f"pretrain_{kind}"
    if kind == "objects":
        from cellzoo.synthetic import synthesize

        return _prepared(folder, lambda f: synthesize("objects", 80, f, seed=11, size=(128, 128)))
    labelled, _ = shared.synthetic_nuclei(12, 0, seed=12)
    return _prepared(folder, lambda f: write_layout("cellseg", labelled, f))


def _pretrains(entry: Entry) -> bool:
    """Whether an arm of the entry starts from a pretraining."""
    from cellzoo.benchmarks.cellpose_peer import PEER
    from cellzoo.studies import load_study

    if entry.bundle == PEER:
        return False
    arms = load_study(entry.bundle).task(entry.study_task).arms
    return any(arms[arm].init is not None for arm in entry.arms)


def plan_jobs(tasks: list[Task], out: Path, realdata: Path, entries: list[Entry] | None = None,
              seeds: tuple[int, ...] = (0,)) -> list[Job]:
    """Write the data of every (task, bundle) and return the study jobs: one per seed, each in its own folder,
    after one pretraining job where an arm starts from a pretraining."""
    jobs = []
    for task in tasks:
        labelled, unlabelled = _samples(task, realdata)
        names = [item_name(s.name, task.kind) for s in labelled]
        test, _ = split_test(names, task.n_test, SPLIT_SEED, out)
        for entry in (e for e in (entries if entries is not None else bundle_entries() + peer_entries())
                      if e.kind == task.kind):
            data = _prepared(out / "data" / task.name / entry.layout,
                             lambda f: write_layout(entry.layout, labelled, f, unlabelled))
            pretrain = None if entry.pretrain_data is None else _pretrain_folder(entry.pretrain_data, out)
            folder = out / "studies" / task.name / entry.bundle
            shared = None
            if _pretrains(entry):
                shared = Job(task, entry, data, folder / "pretrain", pretrain, tuple(test), int(seeds[0]), pretrain_only=True)
                jobs.append(shared)
            jobs += [Job(task, entry, data, folder / f"seed{seed}", pretrain, tuple(test), int(seed),
                         pretrained_from=None if shared is None else shared.out / entry.study_task / f"seed{shared.seed}",
                         after=None if shared is None else shared.label) for seed in seeds]
    return jobs


def _fill(values: dict, job: Job) -> dict:
    """Placeholders of a declaration: {unlabelled} is the layout's folder of unlabelled images."""
    return fill_placeholders(values, {"{unlabelled}": str(job.data.parent / f"{job.data.name}_unlabelled")})


def study_command(job: Job, seeds: list[int], smoke: bool, paper: bool = False) -> list[str]:
    """The `cellzoo study` command line of a job (values reach the configs as data); the peer's own for cellpose."""
    from cellzoo.benchmarks.cellpose_peer import PEER, peer_command

    if job.entry.bundle == PEER:
        return peer_command(job.data, job.task.sizes, seeds, job.task.n_test, job.out) + (["--smoke"] if smoke else [])
    command = [sys.executable, "-m", "cellzoo.cli", "study", job.entry.bundle, str(job.data), "--task",
               job.entry.study_task, "--sizes", ",".join(map(str, job.task.sizes)), "--arms", ",".join(job.entry.arms),
               "--seeds", ",".join(map(str, seeds)), "--n-test", str(job.task.n_test), "--out", str(job.out)]
    if not paper:
        command.append("--quick")
    if smoke:
        command.append("--smoke")
    if job.pretrain_data is not None:
        command += ["--pretrain-data", str(job.pretrain_data)]
    if job.pretrain_only:
        command.append("--pretrain-only")
    if job.pretrained_from is not None:
        command += ["--pretrained-from", str(job.pretrained_from)]
    for option, values in (("--set", {**job.entry.settings, **job.entry.rule}),
                           ("--pretrain-set", job.entry.pretrain_settings)):
        if values:
            command += [option, yaml.safe_dump(_fill(values, job), default_flow_style=True).strip()]
    return command


def run_job(job: Job, smoke: bool, paper: bool, progress) -> float:
    """Run one study in its own process (its output in <out>/study.log); returns its wall time in seconds."""
    job.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # tiny tensors: one thread each
    started = time.perf_counter()
    progress(f"started {job.label} (log: {job.out / 'study.log'})")
    with open(job.out / "study.log", "a") as log:
        code = subprocess.run(study_command(job, [job.seed], smoke, paper), stdout=log, stderr=subprocess.STDOUT,
                              env=env).returncode
    if code != 0:
        raise RuntimeError(f"{job.label} failed (exit {code}); see {job.out / 'study.log'}")
    _check_split(job)
    return time.perf_counter() - started


def _check_split(job: Job) -> None:
    """The study drew the benchmark's test items (the same names in every layout make the same split)."""
    manifest = json.loads((job.out / job.entry.study_task / MANIFEST).read_text())
    if tuple(manifest["test_items"]) != job.test_items:
        raise RuntimeError(f"{job.label}: the study tested on {manifest['test_items']}, not the benchmark's "
                           f"{list(job.test_items)}")


def collect_rows(job: Job) -> list[dict]:
    """The study's rows with the benchmark's metric names: task, method (bundle), arm, n, seed, metric, value."""
    import csv

    if job.pretrain_only:
        return []
    path = job.out / job.entry.study_task / f"{job.entry.bundle}_{job.entry.study_task}.csv"
    names = {theirs: ours for ours, theirs in job.entry.metrics.items()}
    with open(path, newline="") as handle:
        return [{"task": job.task.name, "method": job.entry.bundle, "arm": row["arm"], "n": int(row["n"]),
                 "seed": int(row["seed"]), "metric": names[row["metric"]], "value": float(row["value"])}
                for row in csv.DictReader(handle) if row["metric"] in names]


def collect_times(job: Job) -> list[dict]:
    """Wall time and stop of every step a study ran: {task, method, arm, n, seed, step, minutes, stopped, plateau};
    pretrainings as their own rows (arm = the pretraining's name, n = 0), since an arm's cost includes them.
    `stopped` is the run's training_summary.json stop reason ("" where none was written), `plateau` whether
    that was the end of learning rather than a guard."""
    rows = []
    root = job.out / job.entry.study_task
    for path in sorted(root.glob("seed*/*/n*/result.json")) + sorted(root.glob("seed*/pretrain_*/done.json")):
        minutes = json.loads(path.read_text()).get("minutes")
        if minutes is None:
            continue
        seed = int(path.parts[-4 if path.name == "result.json" else -3].removeprefix("seed"))
        if path.name == "result.json":
            arm, n, step = path.parts[-3], int(path.parts[-2].removeprefix("n")), "fine-tune"
        else:
            arm, n, step = path.parts[-2].removeprefix("pretrain_"), 0, "pretrain"
        summary = path.parent / SUMMARY
        stop = json.loads(summary.read_text()) if summary.is_file() else {}
        rows.append({"task": job.task.name, "method": job.entry.bundle, "arm": arm, "n": n, "seed": seed,
                     "step": step, "minutes": float(minutes), "stopped": stop.get("stop_reason", ""),
                     "plateau": bool(stop.get("plateau", False))})
    return rows


def run_benchmark(out: str | Path, seeds: list[int], smoke: bool = False, tasks: list[str] | None = None,
                  jobs: int = 2, realdata: str | Path | None = None, docs: str | Path | None = None,
                  paper: bool = False) -> list[dict]:
    """Run (or resume) the benchmark; writes <out>/label_efficiency.csv, one plot per task and the report.

    `smoke`: fixed tiny budgets instead of training to the plateau (CI); `paper`: the paper-scale configs."""
    out, started = Path(out).absolute(), time.perf_counter()
    chosen = [TASKS[t] for t in _check_tasks(tasks or (list(TASKS) if smoke else list(DEFAULT_TASKS)))]
    realdata = Path(realdata) if realdata is not None else None
    if any(t.real for t in chosen) and (realdata is None or not realdata.is_dir()):
        if tasks:
            raise InputError("the real tasks need the real data sets (--realdata)", realdata)
        print(f"real data not found ({realdata}): running the synthetic tasks instead", file=sys.stderr)
        chosen = [t for t in TASKS.values() if not t.real]
    planned = plan_jobs(chosen, out, realdata, seeds=tuple(seeds))
    done, failed = [], []

    printing = threading.Lock()  # two studies report at once: one whole line each

    def progress(message: str) -> None:
        with printing:
            print(f"[{len(done)}/{len(planned)} done, {time.perf_counter() - started:.0f} s] {message}",
                  file=sys.stderr, flush=True)

    def work(job: Job) -> bool:
        try:
            seconds = run_job(job, smoke, paper, progress)
        except RuntimeError as err:  # the others go on; the report says what is missing
            failed.append(str(err))
            progress(str(err))
            return False
        done.append(job)
        progress(f"finished {job.label} in {seconds:.0f} s")
        return True

    # the pretrainings first (the seeds' jobs wait for them), then the costliest
    run_after_dependencies(sorted(planned, key=lambda job: (not job.pretrain_only, -_expected_cost(job), job.seed)),
                           int(jobs), work, lambda job: failed.append(f"{job.label} not run: {job.after} failed"))
    rows = [row for job in planned if job in done for row in collect_rows(job)]
    times = [row for job in planned if job in done for row in collect_times(job)]
    curves = [(job.task.name, job.entry.bundle, job.out / job.entry.study_task) for job in planned
              if job in done and job.seed == seeds[0] and not job.pretrain_only]  # the report plots the first seed's curves
    write_benchmark_report(rows, chosen, out, seeds, smoke, time.perf_counter() - started, docs, times=times,
                           curves=curves)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(planned)} studies failed: " + "; ".join(failed))
    return rows


def run_after_dependencies(jobs: list[Job], slots: int, work, skipped) -> None:
    """Run `work(job)` (True when it succeeded) on `slots` threads, taking jobs in the order given, each once
    the job named by its `after` has succeeded; `skipped(job)` instead where that one failed."""
    labels = {job.label for job in jobs}
    missing = sorted({job.after for job in jobs if job.after is not None and job.after not in labels})
    if missing:
        raise ValueError(f"jobs wait for jobs not planned: {missing}")
    pending, finished = list(jobs), {}  # label -> whether it succeeded
    changed = threading.Condition()

    def take() -> Job | None:
        with changed:
            while pending:
                ready = [job for job in pending if job.after is None or job.after in finished]
                if ready:
                    pending.remove(ready[0])
                    return ready[0]
                changed.wait()
            return None

    def slot() -> None:
        while (job := take()) is not None:
            ok = False
            try:
                if job.after is None or finished[job.after]:
                    ok = work(job)
                else:
                    skipped(job)
            finally:  # recorded even if `work` raised, so no job waits for it forever
                with changed:
                    finished[job.label] = ok
                    changed.notify_all()

    threads = [threading.Thread(target=slot) for _ in range(max(1, slots))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _check_tasks(tasks: list[str] | None) -> list[str]:
    names = list(TASKS) if not tasks else list(tasks)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise InputError(f"unknown benchmark task(s) {unknown}; tasks: {', '.join(TASKS)}")
    return names


def _expected_cost(job: Job) -> int:
    """The bundle's declared relative cost, doubled on the real tasks (larger images)."""
    return job.entry.relative_cost * (2 if job.task.real else 1)
