"""Benchmark cellzoo's flow targets and flow post-processing against cellpose 3.1 on real label images.

Prints one JSON object. Needs cellpose 3.1 in .bench/cellpose (scripts/install_cellpose_reference.sh).

Per image: flow time of cellzoo.targets.flows.labels_to_flows vs cellpose dynamics.masks_to_flows (median of
--repeats, interleaved) and their mean cosine over cell pixels; post-processing time of
cellzoo.postprocess.flows.flows_to_instances vs cellpose dynamics.compute_masks given the same inputs (flows =
5 x cellpose-computed flows of the ground truth, logits = +-4 from ground truth > 0, both given the same cleaned
foreground) and the F1 at IoU 0.5 between the two mask sets; the same F1 for perturbed, network-like inputs.

    .venv/bin/python scripts/benchmark_flows.py [--realdata ../shared/realdata] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import tifffile
import torch

from cellzoo.metrics import instance_scores
from cellzoo.postprocess.flows import clean_foreground, flows_to_instances
from cellzoo.targets.flows import labels_to_flows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the flow checks the tests use, so both measure the same way
from flow_checks import mean_flow_cosine, perturb_flow_maps  # noqa: E402
DATASETS = ("neurips_cellseg", "dsb2018_stage1test", "ctc_gowt1_seg", "ctc_hela_seg", "ctc_msc_seg")


def load_cellpose() -> ModuleType:
    """cellpose.dynamics from .bench/cellpose, or exit with a message."""
    bench = ROOT / ".bench" / "cellpose"
    if bench.is_dir():
        sys.path.append(str(bench))
    try:
        from cellpose import dynamics
    except ImportError as exc:
        sys.exit(f"cellpose 3.1 not importable ({exc}); run scripts/install_cellpose_reference.sh")
    return dynamics


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def race(ref: Callable[[], object], ours: Callable[[], object], repeats: int) -> tuple[float, float, object, object]:
    """Median seconds of `ref` and `ours` over interleaved repeats (after one warm-up each) and their results."""
    ref_out, our_out = ref(), ours()
    t_ref, t_our = [], []
    for _ in range(repeats):
        t_ref.append(timed(ref)[0])
        t_our.append(timed(ours)[0])
    return statistics.median(t_ref), statistics.median(t_our), ref_out, our_out


def f1(a: np.ndarray, b: np.ndarray) -> float:
    """F1 at IoU 0.5 between two label images."""
    return instance_scores(a.astype(np.int32), b.astype(np.int32))["thresholds"]["0.50"]["f1"]


def bench_image(dyn: ModuleType, lab: np.ndarray, repeats: int, threads: int, seed: int) -> dict:
    """All figures for one label image."""
    cpu = torch.device("cpu")
    t_cp, t_cz, ref, ours = race(
        lambda: dyn.masks_to_flows(lab, device=cpu), lambda: labels_to_flows(lab, num_threads=threads), repeats
    )
    flows_res = {"cellpose_s": t_cp, "cellzoo_s": t_cz, "speedup": t_cp / t_cz,
                 "mean_cosine": mean_flow_cosine(ref, ours, lab > 0)}

    flows = (5 * ref).astype(np.float32)
    logits = np.where(lab > 0, 4.0, -4.0).astype(np.float32)

    def post(fl: np.ndarray, lg: np.ndarray) -> tuple[Callable, Callable]:
        # cellpose's compute_masks does no hole/speck cleanup: give it the cleaned foreground cellzoo uses
        clean = np.where(clean_foreground(lg > 0, 16), 4.0, -4.0).astype(np.float32)
        return (
            lambda: dyn.compute_masks(fl, clean, niter=200, cellprob_threshold=0.0, flow_threshold=0.4,
                                      max_size_fraction=0.9, device=cpu),
            lambda: flows_to_instances(fl, lg, num_threads=threads),
        )

    t_cp, t_cz, m_cp, m_cz = race(*post(flows, logits), repeats)
    post_res = {
        "cellpose_s": t_cp, "cellzoo_s": t_cz, "speedup": t_cp / t_cz, "f1_iou50": f1(m_cp, m_cz),
        "n_cellpose": int(len(np.unique(m_cp)) - 1), "n_cellzoo": int(len(np.unique(m_cz)) - 1),
        "f1_cellzoo_vs_gt": f1(lab, m_cz),
    }
    ref_fn, our_fn = post(*perturb_flow_maps(flows, logits, seed))
    m_cp, m_cz = ref_fn(), our_fn()
    noisy = {"f1_iou50": f1(m_cp, m_cz), "n_cellpose": int(len(np.unique(m_cp)) - 1),
             "n_cellzoo": int(len(np.unique(m_cz)) - 1)}
    return {"flows": flows_res, "postprocess": post_res, "postprocess_perturbed": noisy}


def summarise(rows: list[dict]) -> dict:
    """Totals (summed medians), speed-ups and worst-case agreement, overall and per dataset."""

    def block(sel: list[dict]) -> dict:
        out = {}
        for part, score in (("flows", "mean_cosine"), ("postprocess", "f1_iou50")):
            cp = sum(r[part]["cellpose_s"] for r in sel)
            cz = sum(r[part]["cellzoo_s"] for r in sel)
            vals = [r[part][score] for r in sel]
            out[part] = {"cellpose_s": cp, "cellzoo_s": cz, "speedup": cp / cz,
                         f"{score}_image_mean": float(np.mean(vals)), f"{score}_image_min": float(np.min(vals))}
        vals = [r["postprocess_perturbed"]["f1_iou50"] for r in sel]
        out["postprocess_perturbed"] = {"f1_iou50_image_mean": float(np.mean(vals)),
                                        "f1_iou50_image_min": float(np.min(vals))}
        return out

    total = block(rows)
    total["per_dataset"] = {d: block([r for r in rows if r["dataset"] == d]) for d in DATASETS
                            if any(r["dataset"] == d for r in rows)}
    return total


def crop_time(realdata: Path, threads: int, repeats: int) -> dict | None:
    """labels_to_flows on a 512x512 crop (the MEDIAR training crop size): the per-sample cost of LabelsToFlowsd."""
    path = realdata / "neurips_cellseg" / "labels" / "cell_00849_label.tiff"
    if not path.is_file():
        return None
    lab = tifffile.imread(path).astype(np.int32)[:512, :512]
    labels_to_flows(lab, num_threads=threads)
    times = [timed(lambda: labels_to_flows(lab, num_threads=threads))[0] for _ in range(max(repeats, 5))]
    return {"file": path.name, "shape": list(lab.shape), "n_cells": int(len(np.unique(lab)) - 1),
            "median_s": statistics.median(times)}


def main() -> None:
    """Parse options, run every image, print the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (cellzoo and cellpose)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many images per dataset")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # cellpose's sparse-tensor warning
    dyn = load_cellpose()
    rows = []
    for dataset in DATASETS:
        files = sorted((args.realdata / dataset / "labels").glob("*.tif*"))[: args.limit]
        for i, path in enumerate(files):
            lab = tifffile.imread(path).astype(np.int32)
            row = {"dataset": dataset, "file": path.name, "shape": list(lab.shape),
                   "n_cells": int(len(np.unique(lab)) - 1)}
            row.update(bench_image(dyn, lab, args.repeats, args.threads, seed=i))
            rows.append(row)
            print(f"{dataset}/{path.name}: flows x{row['flows']['speedup']:.2f}, "
                  f"post x{row['postprocess']['speedup']:.2f}", file=sys.stderr)
    if not rows:
        sys.exit(f"no label images under {args.realdata}")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": args.threads,
        "repeats": args.repeats,
        "versions": {"cellpose": importlib.metadata.version("cellpose"), "torch": torch.__version__,
                     "numpy": np.__version__},
        "postprocess_inputs": "flows = 5 x cellpose masks_to_flows(ground truth), logits = +-4 from ground truth > 0; "
                              "cellpose gets the foreground after cellzoo's hole/speck cleanup (min_size 16); "
                              "perturbed: + smooth noise (flows sd 1.5, logits sd 1 after a sigma-1 blur)",
        "labels_to_flows_512_crop": crop_time(args.realdata, args.threads, args.repeats),
        "totals": summarise(rows),
        "images": rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
