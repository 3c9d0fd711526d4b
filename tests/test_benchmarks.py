"""The label-efficiency benchmark (cellzoo.benchmarks): shared samples written in every bundle's layout with
the same item names, the jobs it plans, its report; the studies themselves are replaced by a stand-in that
writes what `cellzoo study` writes, so the mechanics are checked in seconds."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cellzoo.benchmarks import cellpose_peer as peer
from cellzoo.benchmarks import label_efficiency as bench
from cellzoo.benchmarks.report import claim_verdicts
from cellzoo.benchmarks.layouts import item_name, write_layout
from cellzoo.benchmarks.samples import real_nuclei, synthetic_labelfree, synthetic_nuclei
from cellzoo.bundles import parse_config_value
from cellzoo.studies import load_study
from conftest import REALDATA

TINY = {name: dataclasses.replace(task, n_test=2, sizes=(1, 2)) for name, task in bench.TASKS.items()}


def datalist_names(entry: bench.Entry, data: Path) -> list[str]:
    """The item names the bundle's fine-tuning config finds in `data` (what its study splits)."""
    spec = load_study(entry.bundle).task(entry.study_task)
    overrides = {**spec.overrides, **spec.finetune.overrides, "dataset_dir": str(data)}
    entries = parse_config_value(entry.bundle, spec.finetune.config, "datalist", quick=True, **overrides)
    return sorted({str(e["name"]) for e in entries})


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    nuclei = dataclasses.replace(TINY["nuclei_synthetic"])
    labelfree = dataclasses.replace(TINY["labelfree_synthetic"])
    return out, bench.plan_jobs([nuclei, labelfree], out, REALDATA, bench.bundle_entries())


def test_every_bundle_reads_the_shared_items_under_the_same_names(planned):
    out, jobs = planned
    labelled, _ = synthetic_nuclei(16, 16, seed=1)
    by_kind = {"nuclei": sorted(s.name for s in labelled),
               "labelfree": sorted(item_name(s.name, "labelfree") for s in synthetic_labelfree(16, seed=2))}
    assert {job.entry.bundle for job in jobs} == {"mediar_cellseg", "isl_segmentation", "pmc_detection",
                                                   "cupre_instance_seg", "unetr_lightmycells"}
    for job in jobs:
        assert datalist_names(job.entry, job.data) == by_kind[job.task.kind], job.label
    tests = {kind: {job.test_items for job in jobs if job.task.kind == kind} for kind in bench.KINDS}
    assert all(len(t) == 1 and len(next(iter(t))) == 2 for t in tests.values())  # one test set per task
    # the unlabelled images reach the pretrainings that use them: PMC's frames, CUPre's MoCo folder
    pmc = next(job for job in jobs if job.entry.bundle == "pmc_detection")
    frames = parse_config_value("pmc_detection", "pretrain", "datalist", quick=True, dataset_dir=str(pmc.data))
    assert len(frames) == 32
    cupre = next(job for job in jobs if job.entry.bundle == "cupre_instance_seg")
    assert len(list((cupre.data.parent / "coco_unlabelled").glob("*.tif"))) == 32
    assert "--pretrain-set" in bench.study_command(cupre, [0], smoke=True)
    # the benchmark's cadence reaches its studies' steps, not the entry's settings (which the shipped weights use)
    mediar = next(job for job in jobs if job.entry.bundle == "mediar_cellseg")
    command = bench.study_command(mediar, [0], smoke=False)
    assert yaml.safe_load(command[command.index("--set") + 1]) == {"val_interval": 2, "patience": 3}
    assert "val_interval" not in mediar.entry.settings


def test_layouts_keep_pixels_and_labels(tmp_path):
    labelled, _ = synthetic_nuclei(2, 0, seed=3, size=(64, 80))
    from cellzoo.io import load_coco_json, read_image, read_labels
    from cellzoo.io.coco import coco_to_label_image

    write_layout("coco", labelled, tmp_path / "coco")
    document = load_coco_json(tmp_path / "coco" / "annotations.json")
    for record, sample in zip(document["images"], labelled):
        annotations = [a for a in document["annotations"] if a["image_id"] == record["id"]]
        assert np.array_equal(coco_to_label_image(annotations, 64, 80) > 0, sample.labels > 0)
    write_layout("isl", labelled, tmp_path / "isl")
    assert np.array_equal(read_labels(tmp_path / "isl" / labelled[0].name / "label_nuclei.tif"), labelled[0].labels)
    assert np.array_equal(read_image(tmp_path / "isl" / labelled[0].name / "input_FLUO.tif")[0], labelled[0].image)
    with pytest.raises(Exception, match="does not hold nuclei samples"):
        write_layout("lightmycells", labelled, tmp_path / "lmc")


@pytest.mark.skipif(not REALDATA.is_dir(), reason="real data not found at ../shared/realdata")
def test_real_nuclei_samples():
    labelled, unlabelled = real_nuclei(REALDATA)
    assert len(labelled) == 17 and len(unlabelled) == 20
    assert {s.name.split("_")[0] for s in labelled} == {"dsb", "hela", "gowt1"}
    for sample in labelled:
        assert sample.image.ndim == 2 and sample.image.shape == sample.labels.shape and sample.labels.max() > 0


class FakeStudies:
    """Stands in for the `cellzoo study` processes: writes the manifest and CSV a study writes, with a value
    that encodes (bundle, arm, n, seed), and records the command lines."""

    def __init__(self, wrong_split_for: str | None = None):
        self.commands: list[list[str]] = []
        self.wrong_split_for = wrong_split_for
        self.waited: list[bool] = []  # per job that starts from a shared pretraining: was it there

    def __call__(self, command, stdout=None, stderr=None, env=None):
        self.commands.append(command)
        if command[2] == "cellzoo.benchmarks.cellpose_peer":
            bundle, task, data = peer.PEER, peer.TASK, command[3]
        else:
            bundle, task, data = command[4], command[command.index("--task") + 1], command[5]
        out = Path(command[command.index("--out") + 1]) / task
        out.mkdir(parents=True, exist_ok=True)
        job = next(j for j in self.jobs if j.entry.bundle == bundle and str(j.data) == data)
        test = list(job.test_items) if bundle != self.wrong_split_for else ["elsewhere"]
        (out / "study.json").write_text(json.dumps({"test_items": test}))
        if "--pretrained-from" in command:  # started only once its shared pretraining has finished
            shared = Path(command[command.index("--pretrained-from") + 1])
            self.waited.append((shared / "pretrain_shared" / "done.json").is_file())
        if "--pretrain-only" in command:
            done = out / f"seed{command[command.index('--seeds') + 1]}" / "pretrain_shared" / "done.json"
            done.parent.mkdir(parents=True)
            done.write_text(json.dumps({"minutes": 2.0}))
            return self.Done()
        with open(out / f"{bundle}_{task}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["bundle", "task", "arm", "n", "seed", "metric", "value"])
            for arm in job.entry.arms:
                for n in command[command.index("--sizes") + 1].split(","):
                    for seed in command[command.index("--seeds") + 1].split(","):
                        for theirs in job.entry.metrics.values():
                            writer.writerow([bundle, task, arm, n, seed, theirs, 0.1 * int(n) + 0.01 * int(seed)])
                        writer.writerow([bundle, task, arm, n, seed, "n_images", 3])  # not a benchmark metric
                        result = out / f"seed{seed}" / arm / f"n{n}" / "result.json"
                        result.parent.mkdir(parents=True, exist_ok=True)
                        result.write_text(json.dumps({"minutes": 0.5 * int(n)}))
                        # seed 0 stops on its plateau, seed 1 at the time guard: the report must tell them apart
                        reason = "early stop: no better val in 3 validations" if seed == "0" else "time limit of 10 min"
                        (result.parent / "training_summary.json").write_text(
                            json.dumps({"stop_reason": reason, "plateau": seed == "0"}))
        return self.Done()

    class Done:
        returncode = 0


def test_benchmark_runs_every_study_with_one_split_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "TASKS", TINY)
    monkeypatch.setattr(peer, "cellpose_path", lambda: tmp_path)  # the peer takes part (its process is faked too)
    fake = FakeStudies()
    fake.jobs = bench.plan_jobs([TINY["nuclei_synthetic"], TINY["labelfree_synthetic"]], tmp_path / "out", REALDATA)
    monkeypatch.setattr(bench.subprocess, "run", fake)
    docs = tmp_path / "docs" / "label_efficiency.md"
    rows = bench.run_benchmark(tmp_path / "out", [0, 1], smoke=True, tasks=["nuclei_synthetic", "labelfree_synthetic"],
                               jobs=2, docs=docs)
    # (4 nucleus methods and cellpose, 2 label-free methods) x 2 seeds, and one pretraining job for each of the
    # 4 methods with a pretrained arm (MEDIAR, CUPre, PMC, UNETR), run before the seeds that start from it
    assert len(fake.commands) == 7 * 2 + 4
    pretrainings = [c for c in fake.commands if "--pretrain-only" in c]
    assert len(pretrainings) == 4 and fake.waited == [True] * 8
    assert all(c[c.index("--seeds") + 1] == "0" and c[c.index("--out") + 1].endswith("pretrain") for c in pretrainings)
    folders = {command[command.index("--out") + 1] for command in fake.commands}
    assert len(folders) == 18  # each seed of a study in its own folder: two processes never share one
    for command in (c for c in fake.commands if c not in pretrainings):
        assert command[command.index("--n-test") + 1] == "2" and command[command.index("--sizes") + 1] == "1,2"
        seed = command[command.index("--seeds") + 1]
        assert seed in ("0", "1") and command[command.index("--out") + 1].endswith(f"seed{seed}") and "--smoke" in command
        assert "--quick" in command or command[2] == "cellzoo.benchmarks.cellpose_peer"
    assert {r["arm"] for r in rows if r["method"] == "cellpose"} == {"scratch"}
    assert {r["metric"] for r in rows if r["task"] == "nuclei_synthetic"} == {"box_ap", "f1", "mask_ap"}
    assert {r["metric"] for r in rows if r["method"] == "pmc_detection"} == {"box_ap"}  # boxes only
    assert not [r for r in rows if r["metric"] == "n_images"]
    mediar = [r for r in rows if r["method"] == "mediar_cellseg" and r["metric"] == "f1" and r["arm"] == "pretrained"]
    assert sorted((r["n"], r["seed"], round(r["value"], 6)) for r in mediar) == [(1, 0, 0.1), (1, 1, 0.11), (2, 0, 0.2),
                                                                              (2, 1, 0.21)]
    with open(tmp_path / "out" / "label_efficiency.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    report = docs.read_text()
    assert "| 2 | " in report and "mediar: pretrained" in report and "unetr: mae" in report and "0.205 ± 0.007" in report
    assert (docs.parent / "images" / "label_efficiency_nuclei_synthetic.png").is_file()
    assert "images/label_efficiency_labelfree_synthetic.png" in report
    assert "SMOKE RUN" in report
    assert "| nuclei_synthetic | fine-tune | cellpose | scratch | 2 | 1.0 | 2 | 1 of 2 |" in report
    with open(tmp_path / "out" / "label_efficiency_times.csv") as handle:
        times = list(csv.DictReader(handle))
    assert len(times) == 2 * 2 * (2 + 2 + 2 + 1 + 1 + 1 + 2) + 4  # seeds x sizes x arms, and the 4 pretrainings
    assert len([row for row in times if row["step"] == "pretrain" and row["seed"] == "0"]) == 4
    assert {(row["seed"], row["stopped"], row["plateau"]) for row in times if row["step"] == "fine-tune"} == {
        ("0", "early stop: no better val in 3 validations", "True"), ("1", "time limit of 10 min", "False")}
    # MEDIAR: equal arms; of its 4 fine-tunings at N = 2 (2 arms, 2 seeds) the 2 of seed 0 stopped on a plateau
    assert "| nuclei_synthetic | 2 | 2 | +0.000 f1 | within noise | 2 of 4 |" in report
    assert "Not measured here: ISL takes part with its scratch arms only" in report


def test_claim_verdicts_need_every_seed_to_agree():
    claim = bench.Claim("P", "arm beats scratch", "m", "arm", "scratch", "f1")
    rows = [{"task": "t", "method": "m", "arm": arm, "n": n, "seed": seed, "metric": "f1", "value": value}
            for n, arm, values in ((1, "arm", (0.5, 0.6, 0.7)), (1, "scratch", (0.4, 0.5, 0.6)),
                                   (4, "arm", (0.5, 0.4, 0.7)), (4, "scratch", (0.4, 0.5, 0.6)),
                                   (8, "arm", (0.1, 0.2, 0.3)), (8, "scratch", (0.4, 0.5, 0.6)))
            for seed, value in enumerate(values)]
    verdicts = {v["n"]: (v["verdict"], round(v["mean"], 3), v["seeds"]) for v in claim_verdicts(rows, [claim])}
    assert verdicts == {1: ("yes", 0.1, 3), 4: ("within noise", 0.033, 3), 8: ("no", -0.3, 3)}


def test_a_study_that_split_otherwise_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "TASKS", TINY)
    fake = FakeStudies(wrong_split_for="unetr_lightmycells")
    fake.jobs = bench.plan_jobs([TINY["labelfree_synthetic"]], tmp_path / "out", REALDATA)
    monkeypatch.setattr(bench.subprocess, "run", fake)
    # its pretraining job tested elsewhere, so the seed that starts from it is not run either
    with pytest.raises(RuntimeError, match="2 of 3 studies failed: unetr_lightmycells on labelfree_synthetic \\(pretraining, "
                                           "seed 0\\): the study tested on \\['elsewhere'\\].*; unetr_lightmycells on "
                                           "labelfree_synthetic \\(seed 0\\) not run: .*\\(pretraining, seed 0\\) failed"):
        bench.run_benchmark(tmp_path / "out", [0], tasks=["labelfree_synthetic"])
    assert "isl: scratch" in (tmp_path / "out" / "label_efficiency.md").read_text()  # what finished is reported


def test_benchmark_refuses_unknown_tasks(tmp_path):
    from cellzoo.errors import InputError

    with pytest.raises(InputError, match="unknown benchmark task"):
        bench.run_benchmark(tmp_path, [0], tasks=["nuclei_everywhere"])


def test_the_costliest_declared_studies_start_first():
    """The order comes from study.yaml's relative_cost (PMC, then CUPre, then MEDIAR), doubled on real tasks."""
    entries = {entry.bundle: entry for entry in bench.bundle_entries() if entry.kind == "nuclei"}
    assert [entries[b].relative_cost for b in ("pmc_detection", "cupre_instance_seg", "mediar_cellseg",
                                               "isl_segmentation")] == [4, 3, 2, 1]
    job = bench.Job(bench.TASKS["nuclei_real"], entries["pmc_detection"], Path("d"), Path("o"), None, ())
    assert bench._expected_cost(job) == 8


def test_peak_memory_of_a_child_is_its_own_not_its_parents() -> None:
    """ru_maxrss survives execve on Linux: a child of a big pytest process read 3.1 GB in CI. VmHWM does not."""
    from cellzoo.memory import peak_rss_mb

    held = np.ones(400 * 2**20, np.uint8)  # 400 MiB touched in this process
    assert peak_rss_mb() > 400
    child = subprocess.run([sys.executable, "-c", "from cellzoo.memory import peak_rss_mb; print(peak_rss_mb())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < 300 < peak_rss_mb(), child.stdout
    del held


def test_jobs_wait_for_the_job_they_come_after_and_are_skipped_when_it_failed():
    """Two slots: the seeds' jobs start only when their shared pretraining has succeeded, a free slot meanwhile
    takes a job that waits for nothing, and the jobs after a failed pretraining are skipped, not run."""
    import threading
    import time
    from types import SimpleNamespace

    def job(label, after=None):
        return SimpleNamespace(label=label, after=after)

    jobs = [job("pre A"), job("pre B"), job("A 0", "pre A"), job("A 1", "pre A"), job("B 0", "pre B"), job("free")]
    events, lock = [], threading.Lock()

    def work(j) -> bool:
        with lock:
            events.append(("start", j.label))
        time.sleep(0.2 if j.label == "pre A" else 0.01)
        with lock:
            events.append(("end", j.label))
        return j.label != "pre B"

    skipped = []
    bench.run_after_dependencies(jobs, 2, work, lambda j: skipped.append(j.label))
    order = [label for kind, label in events if kind == "start"]
    assert events.index(("end", "pre A")) < min(events.index(("start", "A 0")), events.index(("start", "A 1")))
    assert order.index("free") < order.index("A 0")  # the slot did not idle while "pre A" ran
    assert skipped == ["B 0"] and "B 0" not in order and len(order) == 5
    with pytest.raises(ValueError, match="not planned"):
        bench.run_after_dependencies([job("x", "nowhere")], 2, work, skipped.append)
