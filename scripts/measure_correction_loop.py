"""Measure the napari correction loop on real nuclei: shipped model, one corrected image, fine-tune, score again.

    python scripts/measure_correction_loop.py [--bundle mediar_cellseg] [--realdata ../shared/realdata]
        [--work loop_work] [--corrected NAME]

Through the functions the napari widget calls (cellzoo.interactive), on the benchmark's 5 real test items,
which the shipped weights never saw (scripts/train_release_models.py trains on the others):

1. the shipped model predicts every test item (F1 at IoU 0.5 against the ground truth, seconds each);
2. the user corrects one of them: scripted as the ground truth of that image, the correction a careful
   user would paint (the errors it fixes are counted: missed cells + false cells at IoU 0.5);
3. the bundle's quick recipe fine-tunes from the shipped weights on that one image (early stopping on it,
   as the widget's button does);
4. the fine-tuned model predicts the other test items again.

Prints one line per step and a table of F1 per image before / after; writes <work>/loop.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from cellzoo.benchmarks import samples as shared
from cellzoo.benchmarks.label_efficiency import SPLIT_SEED, TASKS
from cellzoo.interactive import FineTuneJob, PredictionJob, save_annotations
from cellzoo.metrics import evaluate_instances
from cellzoo.shipped_weights import shipped_weights
from cellzoo.studies.engine import split_test


def score(truth: np.ndarray, labels: np.ndarray) -> dict:
    report = evaluate_instances([(truth, labels)], iou=0.5)
    return {"f1": round(float(report["f1"]), 4), "errors": int(report.get("fp", 0)) + int(report.get("fn", 0))}


def predict_all(bundle: str, samples, work: Path, checkpoint=None, quick=None) -> dict:
    results = {}
    for sample in samples:
        job = PredictionJob(bundle, sample.image, work / sample.name, checkpoint, quick)
        prediction = job.result()
        results[sample.name] = {**score(sample.labels, prediction.labels), "seconds": round(prediction.seconds, 1)}
        print(f"  {sample.name}: F1 {results[sample.name]['f1']:.3f} ({prediction.count} cells, "
              f"{prediction.seconds:.1f} s)", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="mediar_cellseg")
    parser.add_argument("--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--work", type=Path, default=Path("loop_work"))
    parser.add_argument("--corrected", default=None, help="the test item to correct (default: the first)")
    args = parser.parse_args(argv)

    labelled, _ = shared.real_nuclei(args.realdata)
    by_name = {s.name: s for s in labelled}
    test, _ = split_test(sorted(by_name), TASKS["nuclei_real"].n_test, SPLIT_SEED, args.realdata)
    corrected = args.corrected or test[0]
    others = [by_name[n] for n in test if n != corrected]
    shipped = shipped_weights(args.bundle)
    print(f"{args.bundle}: shipped weights {shipped.record['checkpoint']}; test items {test}; corrected: {corrected}",
          file=sys.stderr)

    started = time.perf_counter()
    print("1. shipped model on the test items", file=sys.stderr)
    before = predict_all(args.bundle, [by_name[n] for n in test], args.work / "before")
    print(f"2. correction of {corrected}: {before[corrected]['errors']} cells to fix (missed + false at IoU 0.5)",
          file=sys.stderr)
    sample = by_name[corrected]
    save_annotations(args.bundle, {corrected: (sample.image, sample.labels)}, args.work / "session", overwrite=True)
    print("3. fine-tuning the quick recipe from the shipped weights", file=sys.stderr, flush=True)
    tuning = FineTuneJob(args.bundle, args.work / "session", shipped.checkpoint)
    checkpoint = tuning.result()
    tune_seconds = time.perf_counter() - tuning.started
    summary = json.loads((checkpoint.parent / "training_summary.json").read_text())
    print(f"   {summary.get('stop_reason')}; {tune_seconds:.0f} s", file=sys.stderr)
    print("4. fine-tuned model on the other test items", file=sys.stderr)
    after = predict_all(args.bundle, others, args.work / "after", checkpoint, quick=True)

    mean = {when: round(float(np.mean([r[s.name]["f1"] for s in others])), 4) for when, r in (("before", before),
                                                                                             ("after", after))}
    record = {"bundle": args.bundle, "test_items": test, "corrected": corrected, "before": before, "after": after,
              "mean_f1_other_items": mean, "fine_tune_seconds": round(tune_seconds, 1), "fine_tune": summary,
              "total_seconds": round(time.perf_counter() - started, 1)}
    (args.work / "loop.json").write_text(json.dumps(record, indent=2) + "\n")
    print("| image | F1 shipped | F1 after correcting 1 image + fine-tune |\n| --- | --- | --- |")
    for name in test:
        print(f"| {name}{' (corrected)' if name == corrected else ''} | {before[name]['f1']:.3f} | "
              f"{after[name]['f1']:.3f} |" if name in after else f"| {name} (corrected) | {before[name]['f1']:.3f} | - |")
    print(f"| mean of the other {len(others)} | {mean['before']:.3f} | {mean['after']:.3f} |")
    print(f"fine-tuning {tune_seconds:.0f} s; whole loop {record['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
