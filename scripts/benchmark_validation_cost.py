"""Cost and score of one validation pass: a bundle's shipped weights scored on real nuclei at window overlaps.

    python scripts/benchmark_validation_cost.py [--bundle mediar_cellseg] [--overlaps 0.6,0.25] [--work val_work]

A validation of the benchmark's fine-tunings is the bundle's evaluation of its training images, so this
times the evaluation config (quick, no TTA, one CPU thread as the benchmark gives each study) on the N = 4
training images of the docs' timing run and on the benchmark's 5 real test items, once per sliding-window
overlap, and prints one table row each: seconds (setup included), F1 at IoU 0.5, box and mask AP where the
bundle writes them. Needs ../shared/realdata.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one thread, as in the benchmark

ROOT = Path(__file__).resolve().parents[1]
TRAIN_4 = ["dsb_0a849e0e", "dsb_432f367a", "gowt1_01_t021", "dsb_8b59819f"]  # docs/benchmarks.md's MEDIAR N = 4 run
BUNDLES = ("mediar_cellseg", "pmc_detection")  # the two whose validation cost docs/benchmarks.md weighs


def main(argv: list[str] | None = None) -> int:
    from cellzoo.benchmarks.label_efficiency import SPLIT_SEED, TASKS, bundle_entries
    from cellzoo.benchmarks.layouts import item_name, write_layout
    from cellzoo.benchmarks.samples import real_nuclei
    from cellzoo.bundles import run_config
    from cellzoo.shipped_weights import shipped_weights
    from cellzoo.studies.engine import split_test

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="mediar_cellseg", choices=BUNDLES)
    parser.add_argument("--overlaps", default="0.6,0.25")
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    parser.add_argument("--work", type=Path, default=Path("val_work"))
    args = parser.parse_args(argv)

    entry = next(e for e in bundle_entries() if e.bundle == args.bundle and e.kind == "nuclei")
    layout, names = entry.layout, entry.metrics  # benchmark metric -> the bundle's metrics.json name
    labelled, unlabelled = real_nuclei(args.realdata)
    test, _ = split_test([item_name(s.name, "nuclei") for s in labelled], TASKS["nuclei_real"].n_test, SPLIT_SEED,
                         args.realdata)
    data = args.work / layout
    if not data.is_dir():
        write_layout(layout, labelled, data, unlabelled)
    shipped = shipped_weights(args.bundle)
    print("| images | overlap | seconds | F1 (IoU 0.5) | box AP | mask AP |\n| --- | --- | --- | --- | --- | --- |")
    for name, items in (("the 4 training images", TRAIN_4), ("the 5 real test items", test)):
        for overlap in (float(v) for v in args.overlaps.split(",")):
            out = args.work / f"{args.bundle}_{len(items)}_{overlap}"
            started = time.perf_counter()
            run_config(args.bundle, "evaluate", quick=True, **shipped.settings, sw_overlap=overlap,
                       tta=False, dataset_dir=str(data), eval_items=items, checkpoints=[str(shipped.checkpoint)],
                       output_dir=str(out))
            seconds = time.perf_counter() - started
            metrics = json.loads((out / "metrics.json").read_text())
            scores = [f"{metrics[names[k]]:.3f}" if k in names else "-" for k in ("f1", "box_ap", "mask_ap")]
            print(f"| {name} | {overlap} | {seconds:.1f} | {' | '.join(scores)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
