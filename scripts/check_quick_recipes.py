"""Run each model card's "Quick recipe" block exactly as written (no shim, the card's own data and budget) from a
scratch folder, and print per bundle: the wall time of the block, how training stopped, its best validation
score, and the held-out scores its evaluation wrote. This is the check that a card's quick commands give a
working model within 10 minutes on this CPU; the figures go into the card and docs/benchmarks.md.

    .venv/bin/python scripts/check_quick_recipes.py [--bundles mediar_cellseg,pmc_detection] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = "### Quick recipe"
SCORES = ("f1", "precision", "recall", "box_ap", "mask_ap", "bbox_AP", "segm_AP", "map", "ap", "ap50", "psnr", "ssim", "pcc",
          "nmae")


def recipe_block(card: Path) -> str:
    """The first bash block after the card's quick-recipe heading."""
    text = card.read_text()
    if HEADING not in text:
        raise SystemExit(f"{card}: no '{HEADING}' section")
    found = re.search(r"```bash\n(.*?)\n```", text[text.index(HEADING):], re.DOTALL)
    if not found:
        raise SystemExit(f"{card}: the quick recipe has no bash block")
    return found.group(1)


def run_recipe(bundle: str, work: Path) -> dict:
    """Run the block in `work` (the repository's bundles linked in); return its time, stops and scores."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "bundles").exists():
        (work / "bundles").symlink_to(ROOT / "bundles")
    block = recipe_block(ROOT / "bundles" / bundle / "docs" / "README.md")
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    start = time.perf_counter()
    result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=work, env=env,
                            capture_output=True, text=True)
    minutes = (time.perf_counter() - start) / 60
    (work / "log.txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        return {"bundle": bundle, "error": result.stderr.strip().splitlines()[-1:], "minutes": round(minutes, 1)}
    summaries = [json.loads(p.read_text()) for p in sorted(work.rglob("training_summary.json"))]
    metrics = [json.loads(p.read_text()) for p in sorted(work.rglob("metrics.json"))]
    return {"bundle": bundle, "minutes": round(minutes, 1), "training": summaries,
            "scores": [{k: round(float(v), 3) for k, v in m.items() if k in SCORES and isinstance(v, (int, float))} for m in metrics]}


def row(result: dict) -> str:
    """One markdown table row: bundle, block time, each training's stop, best validation, held-out scores."""
    if "error" in result:
        return f"| {result['bundle']} | failed after {result['minutes']} min: {' '.join(result['error'])} | | |"
    stops = "; ".join(f"{'plateau' if s['plateau'] else s['stop_reason']}, {s['iterations']} iterations, "
                      f"{s['minutes']:.1f} min" for s in result["training"])
    best = "; ".join(f"{s['key_metric']} {s['best']['value']:.3f} (iteration {s['best']['iteration']})"
                     for s in result["training"] if s["best"])
    scores = "; ".join(", ".join(f"{k} {v}" for k, v in m.items()) for m in result["scores"])
    return f"| {result['bundle']} | {result['minutes']} min | {stops} | {best} | {scores} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", default=None, help="comma-separated bundle names (default: every bundle)")
    parser.add_argument("--out", default="quick_recipes", help="scratch folder, one subfolder per bundle")
    args = parser.parse_args()
    names = args.bundles.split(",") if args.bundles else sorted(
        p.name for p in (ROOT / "bundles").iterdir() if (p / "docs" / "README.md").is_file())
    print("| bundle | block time | training stopped | best validation | held-out scores |")
    print("| --- | --- | --- | --- | --- |")
    results = []
    for name in names:
        results.append(run_recipe(name, Path(args.out).absolute() / name))
        print(row(results[-1]), flush=True)
    (Path(args.out) / "quick_recipes.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
