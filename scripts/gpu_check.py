"""One command for a machine with one or more GPUs: does every bundle's paper-scale config train, validate and
infer there, how fast, and in how much memory. Prints one JSON line per step.

    python scripts/gpu_check.py [--bundles mediar_cellseg,...] [--iterations 30] [--work DIR] [--dry-run]

Per bundle, each step in its own process with a time cap (`--step-timeout`):
- `train`: train.yaml (paper scale) with AMP for `--iterations` iterations on synthetic data of the bundle's
  layout, then one validation (the train config's own validator);
- `infer`: inference.yaml (sliding windows, the bundle's post-processing) on one `--image-size` image with
  the checkpoint the train step saved;
- `ddp`: the train step under torchrun on 2 GPUs with multi_gpu_train.yaml, when 2 or more GPUs exist.
Each line holds: samples/s, s/iteration, the share of time spent waiting for data, network and
post-processing seconds (per megapixel for `infer`), the first and last loss, peak CUDA memory, wall time,
versions. `--dry-run` does the same on the CPU with the quick configs and small data (a few minutes); the
test suite runs it (tests/test_gpu_check.py).

On a GPU machine whose Python lacks this project's dependencies (monai, pytorch-ignite, segmentation-models-
pytorch, mlflow, fire, imagecodecs, pycocotools, ...): download their wheels here with
`pip download -d wheels --no-deps monai pytorch-ignite segmentation-models-pytorch timm mlflow-skinny fire
imagecodecs pycocotools ...` for the GPU machine's Python version and platform (`--python-version 3.X
--platform manylinux2014_x86_64 --only-binary=:all:`), carry `wheels/` with the repository, and there run
`pip install --no-index --find-links wheels -e . && python scripts/gpu_check.py` (the device tool's README
describes carrying files). docs/gpu.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "common"))

BUNDLES = ("mediar_cellseg", "pmc_detection", "isl_segmentation", "unetr_lightmycells", "cupre_instance_seg")
# (train images, their size) per mode: paper-scale crops need images at least as large as the crop
DATA = {"gpu": (8, 640), "dry": (6, 160)}


def versions() -> dict:
    import monai
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "cuda": torch.version.cuda, "gpu": gpu, "gpus": torch.cuda.device_count()}


def bundle_data(bundle: str) -> dict:
    from cellzoo.studies import load_study

    return load_study(bundle).data


def synth(layout: str, n: int, size: int, out: Path, seed: int) -> Path:
    from cellzoo.synthetic import synthesize

    return out if out.exists() else synthesize(layout, n, out, seed=seed, size=(size, size))


def timer_config(path: Path, train_json: Path, val_json: Path | None, key: str) -> Path:
    """A config appended to the bundle's: a StepTimer on the trainer (and validator, or inference evaluator)."""
    lines = [f"+{key}: [{{_target_: cellzoo.engines.timing.StepTimer, out: '{train_json}'}}]"]
    if val_json is not None:
        lines.append(f"+validate#handlers: [{{_target_: cellzoo.engines.timing.StepTimer, out: '{val_json}', warmup: 0}}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def config_list(bundle: str, names: list[str], extra: list[Path]) -> str:
    files = [str(ROOT / "bundles" / bundle / "configs" / f"{n}.yaml") for n in names] + [str(p) for p in extra]
    return "[" + ", ".join(repr(f) for f in files) + "]"


def train_command(bundle: str, data: Path, work: Path, args, launcher: list[str] | None = None) -> tuple[list[str], dict]:
    from cellzoo.bundles import parse_config_value

    names = ["train", *(["quick"] if args.dry_run else []), *(["multi_gpu_train"] if launcher else [])]
    batch = int(parse_config_value(bundle, "train", "batch_size", quick=args.dry_run))
    step = "ddp" if launcher else "train"
    outputs = {"train": work / f"{step}_timing.json", "validate": work / f"{step}_val_timing.json"}
    timer = timer_config(work / f"{step}_timer.yaml", outputs["train"], outputs["validate"], "train#handlers")
    nproc = 2 if launcher else 1
    command = [*(launcher or [sys.executable]), "-m", "monai.bundle", "run", "--config_file",
               config_list(bundle, names, [timer]), "--bundle_root", str(ROOT / "bundles" / bundle),
               "--dataset_dir", str(data), "--ckpt_dir", str(work / f"{step}_model"), "--output_dir", str(work / f"{step}_run"),
               "--max_epochs", "1", "--samples_per_epoch", str(args.iterations * batch * nproc),
               "--val_interval", "1", "--n_folds", "4"]
    if not args.dry_run:
        command += ["--amp", "true"]
    return command, outputs


def infer_command(bundle: str, images: Path, work: Path, args) -> tuple[list[str], dict]:
    names = ["inference", *(["quick"] if args.dry_run else [])]
    outputs = {"infer": work / "infer_timing.json"}
    timer = timer_config(work / "infer_timer.yaml", outputs["infer"], None, "handlers")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_list(bundle, names, [timer]),
               "--bundle_root", str(ROOT / "bundles" / bundle), "--input_dir", str(images),
               "--output_dir", str(work / "predictions"), "--checkpoints", f"['{work / 'train_model' / 'model.pt'}']"]
    return command, outputs


def run_step(bundle: str, step: str, command: list[str], outputs: dict, timeout: float, megapixels: float | None) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "common"), os.environ.get("PYTHONPATH", "")])}
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        ok, tail = result.returncode == 0, (result.stderr or result.stdout).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        ok, tail = False, [f"timed out after {timeout:.0f} s"]
    line = {"bundle": bundle, "step": step, "ok": ok, "wall_s": round(time.perf_counter() - start, 1)}
    for name, path in outputs.items():
        if Path(path).is_file():
            summary = json.loads(Path(path).read_text())
            line[name] = summary if megapixels is None else {**summary, **per_megapixel(summary, megapixels)}
    if not ok:
        line["error"] = " ".join(tail)[-400:]
    return line


def per_megapixel(summary: dict, megapixels: float) -> dict:
    """Seconds per megapixel of one inference image: network, post-processing, all of an iteration."""
    keys = {"network_s_per_mp": "network_s_per_iteration", "post_s_per_mp": "post_s_per_iteration",
            "total_s_per_mp": "s_per_iteration"}
    return {k: (summary[v] / megapixels if summary.get(v) is not None else None) for k, v in keys.items()}


def check_bundle(bundle: str, args, work: Path, info: dict) -> list[dict]:
    spec = bundle_data(bundle)
    n, size = DATA["dry" if args.dry_run else "gpu"]
    root = work / bundle
    root.mkdir(parents=True, exist_ok=True)
    data = synth(spec["layout"], n, size, root / "data", seed=0)
    lines = []
    command, outputs = train_command(bundle, data, root, args)
    lines.append(run_step(bundle, "train", command, outputs, args.step_timeout, None))
    if lines[-1]["ok"]:
        image_set = synth(spec["layout"], 1, args.image_size, root / "image", seed=1)
        images = image_set / spec["inference_input"] if spec["inference_input"] else image_set
        command, outputs = infer_command(bundle, images, root, args)
        lines.append(run_step(bundle, "infer", command, outputs, args.step_timeout, args.image_size ** 2 / 1e6))
    if info["gpus"] >= 2:
        torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
        command, outputs = train_command(bundle, data, root, args, launcher=torchrun)
        lines.append(run_step(bundle, "ddp", command, outputs, args.step_timeout, None))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default=",".join(BUNDLES))
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default 30; dry run 4)")
    parser.add_argument("--image-size", type=int, default=None, help="inference image side (default 2048; dry run 256)")
    parser.add_argument("--step-timeout", type=float, default=None, help="seconds per step (default 240; dry run 180)")
    parser.add_argument("--work", default="gpu_check_work")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, quick configs, small data: a check of the check")
    args = parser.parse_args(argv)
    args.iterations = args.iterations or (4 if args.dry_run else 30)
    args.image_size = args.image_size or (256 if args.dry_run else 2048)
    args.step_timeout = args.step_timeout or (180 if args.dry_run else 240)
    bundles = [b for b in args.bundles.split(",") if b]
    unknown = sorted(set(bundles) - set(BUNDLES))
    if unknown:
        parser.error(f"unknown bundle(s) {unknown}; bundles: {', '.join(BUNDLES)}")
    info = versions()
    if not args.dry_run and not info["gpus"]:
        parser.error("no CUDA GPU found; --dry-run checks the script on the CPU")
    print(json.dumps({"step": "machine", **info, "dry_run": args.dry_run}), flush=True)
    failed = 0
    for bundle in bundles:
        for line in check_bundle(bundle, args, Path(args.work).resolve(), info):
            print(json.dumps(line), flush=True)
            failed += not line["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
