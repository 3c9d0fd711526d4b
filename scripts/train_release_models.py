"""Train the weights every bundle ships, score them on the benchmark's real test items, and install them.

    python scripts/train_release_models.py [--bundles mediar_cellseg,pmc_detection] [--work release_work]
        [--realdata ../shared/realdata] [--seed 0] [--paper]

For each bundle (one after another; an interrupted run skips the bundles it finished, see <work>/<bundle>/done.json):

1. writes its training data in the layout the bundle reads (cellzoo.benchmarks.layouts): the real images of
   the benchmark task it takes part in (nuclei: 17 labelled fluorescence images; label-free: the 16 tiles of
   the In Silico Labeling field), minus the benchmark's real test items, plus synthetic images;
2. trains the bundle's quick recipe (train config + quick.yaml; `--paper`: the paper-scale config, the recipe
   for a GPU) with the convergence rule of every config (validation on the config's own fold, early stopping,
   the best model kept), given more patience and time than the quick recipes' 10-minute budget (RELEASE_RULE);
3. stores the best weights in float16 (half the size; they load into the float32 network) at the path the
   bundle's inference reads, and scores those stored weights on the benchmark's real test items with the
   bundle's evaluation config;
4. writes <bundle>/models/release.json (cellzoo.shipped_weights): checkpoint, settings, sha256, data, scores,
   how training stopped, the reference output on a fixed image; an overlay picture of one test image in
   <bundle>/docs/release_overlay.png, and the "Shipped weights" section of the model card from the record.

Prints one line per bundle: stop reason, iterations, best validation score, minutes, test scores.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from cellzoo.benchmarks import samples as shared
from cellzoo.benchmarks.label_efficiency import SPLIT_SEED, TASKS, bundle_entries
from cellzoo.benchmarks.layouts import item_name, write_layout
from cellzoo.bundles import bundle_path, parse_config_value, run_config
from cellzoo.engines import read_curve
from cellzoo.packaging import file_hash
from cellzoo.shipped_weights import RECORD, output_digest, reference_image
from cellzoo.studies import load_study
from cellzoo.studies.engine import split_test

sys.path.insert(0, str(Path(__file__).parent))
from release_overlay import draw_overlay

DATA_TERMS = ("Trained on: DSB2018 stage-1 test fluorescence images (BBBC038), Cell Tracking Challenge Fluo-N2DL-HeLa and "
              "Fluo-N2DH-GOWT1 training data (CTC conditions of use: research, cite the challenge; commercial use "
              "needs permission), the In Silico Labeling sample field (Apache-2.0 test fixture), and cellzoo's "
              "synthetic fields. The weights follow the most restrictive of these terms.")


@dataclass(frozen=True)
class Release:
    """One bundle's shipped model: the benchmark kind whose real images train and score it, and its settings."""

    bundle: str
    kind: str                      # "nuclei" or "labelfree" (cellzoo.benchmarks.label_efficiency.KINDS)
    channels: int                  # input channels of the network (for the reference output)
    size: int = 96                 # side of the reference image (UNETR's ViT takes its window only)
    inference: dict = field(default_factory=dict)  # inference settings beyond the study task's own
    # what picks the best model and calibrates decoding: "fold", the config's own validation fold; "real", one
    # held-out real image per source (PMC: its fold held 4 synthetic images of 6, and model selection on them
    # shipped a model with test box AP 0.014 where 4 real training images alone reach 0.198)
    validation: str = "fold"


RELEASES = (
    Release("mediar_cellseg", "nuclei", 3),
    Release("isl_segmentation", "nuclei", 3, {"task": "nuclei"}),  # one plane, repeated to the network's 3 channels
    Release("cupre_instance_seg", "nuclei", 3),
    Release("unetr_lightmycells", "labelfree", 1, size=128),
    Release("pmc_detection", "nuclei", 3, validation="real"),
)
N_SYNTHETIC = 6  # beside 12-13 real training images: the shipped models are for real images
# the quick recipes' rule with more patience and time than their 10-minute budget: a model that is shipped
# trains until its validation score has really flattened
RELEASE_RULE = {"patience": 15, "max_epochs": 400, "max_minutes": 25}


def _samples(kind: str, realdata: Path) -> tuple[list, list, list]:
    """(labelled, unlabelled, real test names): the real samples of the kind's real task plus synthetic ones."""
    if kind == "nuclei":
        real, real_unlabelled = shared.real_nuclei(realdata)
        synthetic, synthetic_unlabelled = shared.synthetic_nuclei(N_SYNTHETIC, N_SYNTHETIC, seed=21)
    else:
        real, real_unlabelled = shared.real_labelfree(realdata), []
        synthetic, synthetic_unlabelled = shared.synthetic_labelfree(N_SYNTHETIC, seed=22), []
    names = [item_name(s.name, kind) for s in real]
    test, _ = split_test(names, TASKS[f"{kind}_real"].n_test, SPLIT_SEED, realdata)
    return real + synthetic, real_unlabelled + synthetic_unlabelled, test


def held_out_real(names: list[str], test: list[str], seed: int) -> list[str]:
    """One real item per source (the name's prefix: dsb, hela, gowt1, ...) outside the test items, drawn by `seed`."""
    pool = sorted(set(names) - set(test))
    sources = sorted({name.split("_")[0] for name in pool})
    rng = random.Random(seed)
    return sorted(rng.choice([n for n in pool if n.split("_")[0] == source]) for source in sources)


def _entry(release: Release):
    return next(e for e in bundle_entries() if e.bundle == release.bundle and e.kind == release.kind)


def train_one(release: Release, work: Path, realdata: Path, seed: int, quick: bool, max_minutes: float | None = None
              ) -> dict:
    """Steps 1-4 for one bundle; returns its release record."""
    entry, folder = _entry(release), work / release.bundle
    task = load_study(release.bundle).task(entry.study_task)
    labelled, unlabelled, test = _samples(release.kind, realdata)
    names = [item_name(s.name, release.kind) for s in labelled]
    items = {}  # "fold": the config's own split
    if release.validation == "real":
        val = held_out_real(names[:len(names) - N_SYNTHETIC], test, seed)  # _samples puts the synthetic last
        items = {"val_items": val, "train_items": [n for n in names if n not in set(val) | set(test)]}
    data = folder / "data"
    if not (data / ".complete").is_file():
        shutil.rmtree(data, ignore_errors=True)
        write_layout(entry.layout, labelled, data, unlabelled)
        (data / ".complete").write_text("")
    settings = {**task.overrides, **entry.settings}
    started, trained = time.perf_counter(), folder / "train" / "minutes.json"
    rule = {**RELEASE_RULE, **({"max_minutes": max_minutes} if max_minutes else {})} if quick else {}
    if not trained.is_file():  # resumable: a finished training is not run again
        run_config(release.bundle, task.finetune.config, quick=quick, **settings, **rule, **items, dataset_dir=str(data),
                   exclude_items=test, seed=seed, ckpt_dir=str(folder / "train"), output_dir=str(folder / "runs"))
        trained.write_text(json.dumps((time.perf_counter() - started) / 60))
    minutes = json.loads(trained.read_text())
    inference = {**settings, **release.inference}
    target = Path(parse_config_value(release.bundle, "inference", "checkpoints", quick=quick, **inference)[0])
    _store_half(folder / "train" / "model.pt", target)
    scores = _evaluate(release, task, entry, settings, data, test, target, folder / "eval", quick)
    root = bundle_path(release.bundle)
    record = {"bundle": release.bundle, "kind": release.kind, "checkpoint": str(target.relative_to(root)), "quick": quick, "settings": inference,
              "sha256": file_hash(target), "size_mb": round(target.stat().st_size / 1e6, 2), "dtype": "float16",
              "seed": seed, "training": {**_curve_summary(folder / "train"), **rule, "minutes": round(minutes, 1)},
              "data": {"layout": entry.layout, "n_labelled": len(labelled) - len(test), "n_synthetic": N_SYNTHETIC,
                       "test_items": test, "validation": items.get("val_items", "the config's fold"),
                       "terms": DATA_TERMS},
              "test_scores": scores, "reference": _reference(release, target, inference, quick)}
    (root / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _store_half(checkpoint: Path, target: Path) -> None:
    """The checkpoint with its floating-point tensors in float16: the state dict under "model" (other entries,
    e.g. PMC's decoding, as they are) or the checkpoint itself when it is a flat state dict (MEDIAR, ISL)."""
    def half(state: dict) -> dict:
        return {k: v.half() if isinstance(v, torch.Tensor) and torch.is_floating_point(v) else v
                for k, v in state.items()}

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = {**state, "model": half(state["model"])} if "model" in state else half(state)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)


def _evaluate(release, task, entry, settings, data, test, checkpoint, out, quick) -> dict:
    overrides = {**settings, **task.evaluate.overrides, "dataset_dir": str(data), "eval_items": test,
                 "checkpoints": [str(checkpoint)], "output_dir": str(out)}
    if release.bundle == "unetr_lightmycells":
        overrides["save_predictions"] = True  # for the overlay picture
    run_config(release.bundle, task.evaluate.config, quick=quick, **overrides)
    report = json.loads((out / "metrics.json").read_text())
    return {common: round(float(report[theirs]), 4) for common, theirs in entry.metrics.items() if theirs in report}


def _curve_summary(ckpt_dir: Path) -> dict:
    """Iterations trained and the best validation score, from the training curve beside the checkpoint."""
    rows = read_curve(ckpt_dir / "training_curve.csv")
    scored = [r for r in rows if r["val_metric"] is not None]
    best = max(scored, key=lambda r: r["val_metric"]) if scored else None
    return {"iterations": rows[-1]["iteration"] if rows else 0, "epochs": rows[-1]["epoch"] if rows else 0,
            "best_val": round(best["val_metric"], 4) if best else None,
            "best_iteration": best["iteration"] if best else None}


def _reference(release: Release, checkpoint: Path, settings: dict, quick: bool) -> dict:
    """The digest of the raw network output on cellzoo.shipped_weights.reference_image, for the tests."""
    from cellzoo.engines import load_weights

    network = load_weights(parse_config_value(release.bundle, "inference", "network_def", quick=quick, **settings),
                           str(checkpoint)).eval()
    with torch.no_grad():
        output = network(reference_image(release.channels, release.size))
    return {"channels": release.channels, "size": release.size, "digest": output_digest(output)}


CARD_START, CARD_END = "<!-- shipped weights: written by scripts/train_release_models.py -->", "<!-- end of shipped weights -->"


def card_section(record: dict) -> str:
    """The model card's "Shipped weights" section, from the release record."""
    t, d = record["training"], record["data"]
    scores = ", ".join(f"{k} {v:.3f}" for k, v in record["test_scores"].items())
    settings = (f" (it applies the settings the weights need, `{yaml.safe_dump(record['settings'], default_flow_style=True).strip()}`)"
                if record["settings"] else "")
    return "\n".join([
        CARD_START, "## Shipped weights", "",
        f"`{record['checkpoint']}` ({record['size_mb']} MB, {record['dtype']}, sha256 `{record['sha256']}`): the "
        f"{'quick' if record['quick'] else 'paper-scale'} network, used by `cellzoo predict` when no `--checkpoint` "
        f"is given{settings}, and carried by `cellzoo package`.", "",
        f"- Trained by `python scripts/train_release_models.py --bundles {record['bundle']}` (seed {record['seed']}): "
        f"{d['n_labelled'] - d['n_synthetic']} real labelled images of the benchmark's {record['kind']} task outside its test items, plus "
        f"{d['n_synthetic']} synthetic ones, in the `{d['layout']}` layout, {_validation(d)}; stopped {_stop_reason(t)} after "
        f"{t['iterations']} iterations ({t['epochs']} epochs, {t['minutes']} min on 2 CPU cores), best validation "
        f"score {t['best_val']} at iteration {t['best_iteration']} (curve: `training_curve.csv` of the run).",
        f"- On the benchmark's {len(d['test_items'])} real test items ({', '.join(d['test_items'])}): {scores}.",
        f"- {d['terms']}", "",
        "![a real test image](release_overlay.png)", "", CARD_END])


def _validation(data: dict) -> str:
    """What picked the best model: the held-out real images (which then do not train), or the config's fold."""
    held_out = data.get("validation")
    if isinstance(held_out, list):
        return f"the best model picked on {len(held_out)} of the real images held out from training ({', '.join(held_out)})"
    return "the best model picked on the config's validation fold"


def _stop_reason(training: dict) -> str:
    if training.get("max_epochs") and training["epochs"] >= training["max_epochs"]:
        return f"at its maximum of {training['max_epochs']} epochs"
    if training.get("max_minutes") and training["minutes"] >= training["max_minutes"]:
        return f"by the {training['max_minutes']}-minute guard"
    return f"early (no better validation score in {training.get('patience')} validations)"


def write_card_section(card: Path, record: dict) -> None:
    """Replace the card's section between the markers (or append it)."""
    text = card.read_text()
    section = card_section(record)
    if CARD_START in text:
        before, rest = text.split(CARD_START, 1)
        text = before + section + rest.split(CARD_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    card.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default=",".join(r.bundle for r in RELEASES))
    parser.add_argument("--work", default="release_work")
    parser.add_argument("--realdata", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "realdata"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper", action="store_true", help="the paper-scale configs (a GPU recipe)")
    parser.add_argument("--max-minutes", type=float, default=None, help="a shorter time guard than RELEASE_RULE's")
    args = parser.parse_args(argv)
    chosen = [r for r in RELEASES if r.bundle in args.bundles.split(",")]
    if not chosen or not Path(args.realdata).is_dir():
        print(f"need known bundles and the real data ({args.realdata})", file=sys.stderr)
        return 2
    work = Path(args.work).absolute()
    for release in chosen:
        done = work / release.bundle / "done.json"
        if done.is_file():
            record = json.loads(done.read_text())
            print(f"{release.bundle}: done before", file=sys.stderr)
        else:
            record = train_one(release, work, Path(args.realdata), args.seed, quick=not args.paper,
                               max_minutes=args.max_minutes)
            done.write_text(json.dumps(record, indent=2) + "\n")
        draw_overlay(release, work / release.bundle, record, bundle_path(release.bundle) / "docs" / "release_overlay.png")
        write_card_section(bundle_path(release.bundle) / "docs" / "README.md", record)
        t = record["training"]
        print(f"{release.bundle}: {t['iterations']} iterations ({t['epochs']} epochs) in {t['minutes']} min, best val "
              f"{t['best_val']} at iteration {t['best_iteration']}; test {record['test_scores']}; "
              f"{record['size_mb']} MB {record['sha256'][:12]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
