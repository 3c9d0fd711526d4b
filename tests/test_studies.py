"""The study engine (cellzoo.studies): its mechanics with recorded runs, its report, and one real tiny study.

The mechanics tests replace the bundle runs by a recorder that writes what a run would write (model.pt,
metrics.json), so they check exactly which configs run with which overrides: pretraining once per seed,
each arm initialised from the weights it names, nested training sets, a fixed test set, resume.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from cellzoo.cli import main
from cellzoo.errors import InputError
from cellzoo.studies import engine, load_study, markdown_table, run_study, summarise, write_report
from cellzoo.synthetic import synthesize


class Recorder:
    """Stands in for cellzoo.bundles.run_config: records each run and writes its outputs."""

    def __init__(self, fail_at: int | None = None, metric: str = "iou"):
        self.calls: list[tuple[str, dict]] = []
        self.fail_at, self.metric = fail_at, metric

    def __call__(self, bundle: str, config: str, quick: bool = False, **overrides) -> None:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("killed")
        self.calls.append((config, overrides))
        if "checkpoints" in overrides:  # an evaluation: a score that encodes its checkpoint's training
            trained = json.loads(Path(overrides["checkpoints"][0]).read_text())
            score = 0.1 * len(trained["train_items"]) + (0.5 if trained["init_ckpt"] else 0.0)
            Path(overrides["output_dir"]).mkdir(parents=True, exist_ok=True)
            Path(overrides["output_dir"], "metrics.json").write_text(json.dumps({self.metric: score, "dice": 1.0, "n": 3}))
        else:  # a training: its "weights" are a record of what it trained on and from
            Path(overrides["ckpt_dir"]).mkdir(parents=True, exist_ok=True)
            record = {"train_items": overrides.get("train_items"), "init_ckpt": overrides.get("init_ckpt")}
            Path(overrides["ckpt_dir"], "model.pt").write_text(json.dumps(record))

    def of(self, config: str) -> list[dict]:
        return [overrides for name, overrides in self.calls if name == config]


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> Path:
    return synthesize("isl", 7, tmp_path_factory.mktemp("study") / "fields", seed=0, size=(64, 64))


def study(fields: Path, out: Path, **options) -> list[dict]:
    args = dict(bundle="isl_segmentation", data=fields, sizes=[1, 2, 4], seeds=[0, 1], task="nuclei", out=out,
                n_test=2)
    return run_study(**{**args, **options})


def test_smoke_gives_every_step_the_fixed_budgets_of_study_yaml(fields, tmp_path, monkeypatch):
    """--smoke: study.yaml's `smoke:` values reach each step kind (and imply --quick); the manifest records it,
    so a converged study cannot resume into a smoke run's folder."""
    recorder = Recorder()
    monkeypatch.setattr(engine, "run_config", recorder)
    study(fields, tmp_path, sizes=[1], seeds=[0], smoke=True)
    smoke = load_study("isl_segmentation").smoke
    assert all(recorder.of("pretrain")[0][k] == v for k, v in smoke["pretrain"].items())
    assert all(recorder.of("train")[0][k] == v for k, v in smoke["finetune"].items())
    assert json.loads((tmp_path / "nuclei" / "study.json").read_text())["smoke"] is True
    with pytest.raises(InputError, match="other settings \\(quick, smoke\\)"):
        study(fields, tmp_path, sizes=[1], seeds=[0])


def test_each_arm_starts_from_the_weights_it_names(fields, tmp_path, monkeypatch, capsys):
    recorder = Recorder()
    monkeypatch.setattr(engine, "run_config", recorder)
    rows = study(fields, tmp_path)
    pretrain, train, evaluate = recorder.of("pretrain"), recorder.of("train"), recorder.of("evaluate")
    assert len(pretrain) == 2  # once per seed, not once per N
    assert len(train) == len(evaluate) == 2 * 3 * 2  # seeds x sizes x arms
    tests = {tuple(e["eval_items"]) for e in evaluate}
    assert len(tests) == 1  # one fixed test set for every seed, arm and size
    test = set(next(iter(tests)))
    assert len(test) == 2
    for pre in pretrain:  # the pretext trains on every non-test field (it needs no labels)
        assert set(pre["exclude_items"]) == test and "train_items" not in pre and pre["target_channel"] == "DAPI"
    for seed, pre in zip((0, 1), pretrain):
        runs = [t for t in train if t["seed"] == seed]
        for t in runs:
            expected = None if "scratch" in t["ckpt_dir"] else str(Path(pre["ckpt_dir"]) / "model.pt")
            assert t["init_ckpt"] == expected
            assert t["val_items"] == t["train_items"] and not set(t["train_items"]) & test
            assert "samples_per_epoch" not in t and "max_epochs" not in t  # the config's convergence rule decides
        by_n = {len(t["train_items"]): t["train_items"] for t in runs}
        assert sorted(by_n) == [1, 2, 4] and by_n[4][:2] == by_n[2] and by_n[2][:1] == by_n[1]  # nested
    assert [t["train_items"] for t in train if t["seed"] == 0] != [t["train_items"] for t in train if t["seed"] == 1]
    # the rows carry the evaluations' floats (not the count "n"), with the score each run earned
    assert {r["metric"] for r in rows} == {"iou", "dice"} and len(rows) == 24
    ious = {(r["arm"], r["n"], r["seed"]): r["value"] for r in rows if r["metric"] == "iou"}
    assert ious[("scratch", 4, 1)] == pytest.approx(0.4) and ious[("pretrained", 2, 0)] == pytest.approx(0.7)
    assert "[14/14] seed 1: arm 'pretrained', N=4" in capsys.readouterr().err


def test_seeds_share_one_pretraining_run_by_a_pretraining_only_study(fields, tmp_path, monkeypatch, capsys):
    """--pretrain-only runs the pretraining and no fine-tuning; --pretrained-from makes every seed's arms start
    from it without pretraining again, and refuses a folder without it or one that tested on other items."""
    recorder = Recorder()
    monkeypatch.setattr(engine, "run_config", recorder)
    assert study(fields, tmp_path / "pre", seeds=[0], pretrain_only=True) == []
    assert len(recorder.of("pretrain")) == 1 and not recorder.of("train") and not recorder.of("evaluate")
    shared = tmp_path / "pre" / "nuclei" / "seed0"
    recorder.calls.clear()
    rows = study(fields, tmp_path / "tuned", seeds=[1, 2], pretrained_from=shared)
    assert not recorder.of("pretrain") and len(recorder.of("train")) == 2 * 3 * 2
    inits = {t["init_ckpt"] for t in recorder.of("train") if "pretrained" in t["ckpt_dir"]}
    assert inits == {str(shared / "pretrain_pretext" / "model.pt")}
    assert {r["seed"] for r in rows} == {1, 2} and "shared from" in capsys.readouterr().err
    with pytest.raises(InputError, match="no finished pretraining 'pretext'"):
        study(fields, tmp_path / "other", pretrained_from=tmp_path / "nowhere")
    with pytest.raises(InputError, match="left out"):  # another test split: the pretraining saw test items
        study(fields, tmp_path / "other_split", n_test=3, pretrained_from=shared)


def test_an_interrupted_study_resumes_where_it_stopped(fields, tmp_path, monkeypatch):
    killed = Recorder(fail_at=5)  # pretrain, then (train, evaluate) x 2, then killed during the next training
    monkeypatch.setattr(engine, "run_config", killed)
    with pytest.raises(KeyboardInterrupt):
        study(fields, tmp_path)
    resumed = Recorder()
    monkeypatch.setattr(engine, "run_config", resumed)
    rows = study(fields, tmp_path)
    assert len(resumed.of("pretrain")) == 1  # seed 0's pretraining was done; only seed 1's runs
    assert len(resumed.of("train")) == 12 - 2 and len(rows) == 24
    again = Recorder()
    monkeypatch.setattr(engine, "run_config", again)
    assert study(fields, tmp_path) == rows and again.calls == []  # everything done: nothing runs


def test_settings_reach_every_step(fields, tmp_path, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(engine, "run_config", recorder)
    study(fields, tmp_path, sizes=[1], seeds=[0], settings={"roi_size": 32, "seed": 99})
    assert recorder.calls and all(overrides["roi_size"] == 32 for _, overrides in recorder.calls)
    assert all(overrides.get("seed", 0) == 0 for config, overrides in recorder.calls if config != "evaluate")


def test_pretrain_settings_reach_pretraining_steps_only(fields, tmp_path, monkeypatch, capsys):
    recorder = Recorder()
    monkeypatch.setattr(engine, "run_config", recorder)
    study(fields, tmp_path, sizes=[1], seeds=[0], settings={"roi_size": 32, "max_epochs": 3},
          pretrain_settings={"max_epochs": 50})
    assert [o["max_epochs"] for o in recorder.of("pretrain")] == [50]  # after --set
    assert {o["max_epochs"] for c, o in recorder.calls if c != "pretrain"} == {3}
    with pytest.raises(InputError, match="other settings \\(pretrain_settings\\)"):
        study(fields, tmp_path, sizes=[1], seeds=[0], settings={"roi_size": 32, "max_epochs": 3})
    # through the command: keys are checked against the task's pretraining config
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "isl_segmentation", str(fields), "--task", "nuclei", "--pretrain-set", "{nonsense: 1}",
              "--out", str(tmp_path / "cli")])
    assert exit_info.value.code == 2
    assert "--pretrain-set: 'nonsense' is not a key of isl_segmentation's pretrain.yaml" in capsys.readouterr().err


def test_study_refuses_bad_requests(fields, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "run_config", Recorder())
    with pytest.raises(InputError, match="--sizes must lie in 1..5"):
        study(fields, tmp_path / "a", sizes=[1, 6])
    with pytest.raises(InputError, match="whole numbers of labelled fields or fractions in \\(0, 1\\), got 2.5"):
        study(fields, tmp_path / "a", sizes=[2.5])
    with pytest.raises(InputError, match="unknown arm.*arms: scratch, pretrained"):
        study(fields, tmp_path / "b", arms=["imagenet"])
    study(fields, tmp_path / "c", sizes=[1], seeds=[0])
    with pytest.raises(InputError, match="holds a study with other settings \\(test_items\\)"):
        study(fields, tmp_path / "c", sizes=[1], seeds=[0], n_test=3)
    with pytest.raises(InputError, match="pass --pretrain-data"):
        run_study("mediar_cellseg", fields, [1], out=tmp_path / "d")


def test_a_pretraining_starts_from_the_pretraining_it_names(tmp_path, monkeypatch):
    """CUPre's study: AMT2 (arm cupre) starts from the COCO pretraining, which therefore runs first, once per
    seed, even when no chosen arm starts from COCO itself."""
    recorder = Recorder(metric="bbox_AP")
    monkeypatch.setattr(engine, "run_config", recorder)
    cells = synthesize("coco", 6, tmp_path / "cells", seed=0, size=(64, 64))
    run_study("cupre_instance_seg", cells, [1], arms=["scratch", "cupre"], seeds=[0, 1], pretrain_data=tmp_path / "objects",
              out=tmp_path / "study", n_test=1)
    order = [config for config, _ in recorder.calls if config.startswith("pretrain")]
    assert order == ["pretrain_coco", "pretrain_amt2"] * 2  # no Cells-MoCo: no chosen arm starts from it
    for coco, amt2 in zip(recorder.of("pretrain_coco"), recorder.of("pretrain_amt2")):
        assert amt2["init_ckpt"] == str(Path(coco["ckpt_dir"]) / "model.pt") and "init_ckpt" not in coco
        assert coco["dataset_dir"] == str(tmp_path / "objects") and amt2["coco_dir"] == str(tmp_path / "objects")
    cupre = [t for t in recorder.of("train") if "cupre" in t["ckpt_dir"]]
    assert [t["init_ckpt"] for t in cupre] == [str(Path(a["ckpt_dir"]) / "model.pt") for a in recorder.of("pretrain_amt2")]


@pytest.mark.parametrize("inits, message", [({"a": "b", "b": "a"}, "circular"), ({"a": "c"}, "'c' is not another")])
def test_study_refuses_pretraining_chains_that_do_not_end(inits, message):
    from cellzoo.studies.spec import _task

    raw = {"finetune": {"config": "train"}, "evaluate": {"config": "evaluate"}, "arms": {"scratch": {}},
           "pretrainings": {name: {"config": "pretrain", "init": init} for name, init in inits.items()}}
    raw["pretrainings"].setdefault("b", {"config": "pretrain"})
    with pytest.raises(ValueError, match=message):
        _task("t", raw)


def test_the_test_split_depends_on_the_names_not_their_order(tmp_path):
    names = [f"img{i:02d}" for i in range(17)]
    test, pool = engine.split_test(names, 5, 0, tmp_path)
    assert engine.split_test(names[::-1], 5, 0, tmp_path) == (test, pool)
    assert len(test) == 5 and sorted(test + pool) == names
    assert engine.split_test(names, 5, 1, tmp_path)[0] != test  # the seed does change it


def test_label_budgets_take_numbers_and_fractions():
    assert engine.label_budgets([0.05, 0.2, 4, 4.0, 1], 40) == (1, 2, 4, 8)
    assert engine.label_budgets([0.01], 40) == (1,)  # never zero labelled items


def test_every_bundle_declares_a_valid_study():
    import bundle_cli

    for bundle in bundle_cli.bundles():
        spec = load_study(bundle)
        for task in spec.tasks.values():
            configs = {task.finetune.config, task.evaluate.config} | {p.config for p in task.pretrainings.values()}
            assert configs <= {p.stem for p in bundle_cli.bundle_path(bundle).glob("configs/*.yaml")}, bundle
            assert task.finetune.config in bundle_cli.train_configs(bundle), bundle
            assert "scratch" in task.arms and all(a.init is None or a.init in task.pretrainings
                                                  for a in task.arms.values()), bundle


def test_report_tables_and_plot(tmp_path):
    rows = [{"bundle": "b", "task": "t", "arm": arm, "n": n, "seed": seed, "metric": "f1", "value": value}
            for arm, n, seed, value in [("scratch", 1, 0, 0.2), ("scratch", 1, 1, 0.4), ("pretrained", 1, 0, 0.5),
                                        ("pretrained", 1, 1, 0.7), ("scratch", 4, 0, 0.6), ("pretrained", 4, 0, 0.6)]]
    summary = summarise(rows, "f1")
    assert summary[("scratch", 1)] == pytest.approx((0.3, 0.1414214, 2))
    assert summary[("pretrained", 4)] == (0.6, 0.0, 1)
    table = markdown_table(rows, "f1")
    assert "| 1 | 0.300 ± 0.141 | **0.600 ± 0.141** |" in table
    assert "| 4 | 0.600 | 0.600 |" in table  # one seed: no spread shown; a tie: no bold
    files = write_report(rows, "f1", tmp_path, "b_t")
    with open(files["csv"]) as handle:
        assert list(csv.DictReader(handle))[2] == {"bundle": "b", "task": "t", "arm": "pretrained", "n": "1",
                                                    "seed": "0", "metric": "f1", "value": "0.5"}
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["plot"].stat().st_size > 5000


@pytest.mark.slow
def test_a_real_tiny_study_and_its_command(fields, tmp_path, monkeypatch, capsys):
    """ISL nuclei through the bundle's own configs, then `cellzoo study` on the same folder (all resumed)."""
    spec = load_study("isl_segmentation")
    tiny = {"pretrain": {"max_epochs": 1, "samples_per_epoch": 8},
            "finetune": {"max_epochs": 1, "samples_per_epoch": 8}, "evaluate": {"crops_per_image": 1}}
    monkeypatch.setattr(engine, "load_study", lambda bundle: type(spec)(spec.bundle, spec.tasks, tiny, spec.data))
    rows = study(fields, tmp_path, sizes=[1], seeds=[0], smoke=True)
    assert sorted((r["arm"], r["metric"]) for r in rows) == [("pretrained", "dice"), ("pretrained", "iou"),
                                                              ("scratch", "dice"), ("scratch", "iou")]
    folder = tmp_path / "nuclei" / "seed0"
    pretrained = json.loads((folder / "pretrained" / "n1" / "result.json").read_text())
    assert pretrained["init_ckpt"] == str(folder / "pretrain_pretext" / "model.pt")
    for arm in ("scratch", "pretrained"):
        metrics = json.loads((folder / arm / "n1" / "eval" / "metrics.json").read_text())
        assert metrics["n_fields"] == 2 and metrics["crops_per_image"] == 1
        assert [r["value"] for r in rows if r["arm"] == arm and r["metric"] == "iou"] == [metrics["iou"]]

    main(["study", "isl_segmentation", "--data", str(fields), "--sizes", "1", "--seeds", "0", "--task", "nuclei",
          "--out", str(tmp_path), "--n-test", "2", "--smoke"])
    out = capsys.readouterr()
    assert "(done before, skipped)" in out.err and "| N | scratch (iou) | pretrained (iou) |" in out.out
    assert (tmp_path / "nuclei" / "isl_segmentation_nuclei.png").is_file()


def test_a_study_yaml_must_declare_every_data_key(tmp_path):
    """Commands and tests read data.inference_output and data.export_input without defaults: a bundle that
    leaves one out is told so, naming its study.yaml."""
    import shutil

    from cellzoo.bundles import bundle_path
    from cellzoo.errors import InputError

    root = tmp_path / "isl_copy"
    shutil.copytree(bundle_path("isl_segmentation") / "configs", root / "configs")
    path = root / "configs" / "study.yaml"
    raw = yaml.safe_load(path.read_text())
    del raw["data"]["export_input"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match="data: missing export_input") as err:
        load_study(root)
    assert err.value.path == str(path)
