"""The label-efficiency benchmark's results as files: one long CSV, one plot per task, a markdown report.

Tables and plots show each (method, arm) as one column or line: the mean over seeds with the sample
standard deviation, against the number of labelled training images N.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

from cellzoo.studies.report import markdown_table, summarise, write_csv

COLUMNS = ("task", "method", "arm", "n", "seed", "metric", "value")


def method_label(row: dict) -> str:
    """'mediar: pretrained' for bundle mediar_cellseg, arm pretrained."""
    return f"{row['method'].split('_')[0]}: {row['arm']}"


def _as_study_rows(rows: list[dict]) -> list[dict]:
    """Rows in the study report's shape, with the (method, arm) pair as the arm, to reuse its tables."""
    return [{**row, "arm": method_label(row)} for row in rows]


def plot_task(rows: list[dict], metrics: tuple[str, ...], path: Path, title: str) -> Path:
    """One panel per metric: the metric against N (log scale), one line per (method, arm), mean ± sd."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    study_rows = _as_study_rows(rows)
    labels = list(dict.fromkeys(row["arm"] for row in study_rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), dpi=110, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        summary = summarise(study_rows, metric)
        for label in labels:
            points = sorted((n, mean, sd) for (arm, n), (mean, sd, _) in summary.items() if arm == label)
            if points:
                ns, means, sds = zip(*points)
                ax.errorbar(ns, means, yerr=sds, marker="o", capsize=3, label=label)
        sizes = sorted({n for _, n in summary})
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images (N)")
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{'a CUDA GPU' if torch.cuda.is_available() else 'no GPU'}; one CPU thread per study")


def markdown_report(rows: list[dict], tasks: list, seeds: list[int], quick: bool, seconds: float,
                    plots: dict[str, str], command: str) -> str:
    """The report: how it was made, then per task its description, a table per metric and its plot."""
    from cellzoo.benchmarks.label_efficiency import KINDS

    lines = ["# Label efficiency across methods", "",
             "Every cellzoo bundle's own study (`cellzoo study`) on shared tasks: the same images, the same fixed "
             "test items and, per seed, the same nested training sets of N labelled images for every method. "
             "Pretrainings see every image of a task but the test items, without labels (MEDIAR pretrains on "
             "labelled synthetic nuclei, CUPre on synthetic natural-object images: the stand-ins for their public "
             "data sets). Nucleus instances are scored with the platform's COCO metrics (box and mask AP, IoU "
             "0.5:0.95, every cell) and F1 at IoU 0.5; label-free predictions with PSNR, Pearson correlation and "
             "SSIM after percentile normalisation. Segmenters give no confidence per cell, so their box and mask AP "
             "rank the cells in label order; the detectors (CUPre, PMC) rank by score. PMC predicts boxes only.", "",
             f"- Command: `{command}`",
             f"- Configs: {'quick (CPU-sized networks and schedules)' if quick else 'paper scale'}; seeds "
             f"{', '.join(map(str, seeds))}",
             f"- Machine: {_machine()}",
             f"- Wall time: {seconds / 60:.0f} min; written {time.strftime('%Y-%m-%d %H:%M %Z')}", ""]
    for task in tasks:
        task_rows = [row for row in rows if row["task"] == task.name]
        lines += [f"## {task.name}", "", f"{task.description[0].upper()}{task.description[1:]}; "
                  f"{task.n_test} test items, budgets N = {', '.join(map(str, task.sizes))}.", ""]
        if not task_rows:
            lines += ["No results (see the failed studies above).", ""]
            continue
        for metric in KINDS[task.kind]:
            metric_rows = [row for row in _as_study_rows(task_rows) if row["metric"] == metric]
            if metric_rows:
                lines += [f"**{metric}**", "", markdown_table(metric_rows, metric).replace(f" ({metric})", ""), ""]
        if task.name in plots:
            lines += [f"![{task.name}]({plots[task.name]})", ""]
    return "\n".join(lines)


def write_benchmark_report(rows: list[dict], tasks: list, out: Path, seeds: list[int], quick: bool, seconds: float,
                           docs: str | Path | None = None, command: str | None = None) -> dict[str, Path]:
    """<out>/label_efficiency.csv, <out>/label_efficiency_<task>.png, <out>/label_efficiency.md (and a copy of
    the report at `docs`, with its plots beside it in images/)."""
    from cellzoo.benchmarks.label_efficiency import KINDS

    files = {"csv": write_csv(rows, out / "label_efficiency.csv", COLUMNS)}
    plots = {}
    for task in tasks:
        task_rows = [row for row in rows if row["task"] == task.name]
        if task_rows:
            plots[task.name] = plot_task(task_rows, KINDS[task.kind], out / f"label_efficiency_{task.name}.png",
                                         task.name)
    command = command or "cellzoo benchmark label-efficiency " + ("--quick " if quick else "") + \
        f"--seeds {','.join(map(str, seeds))}"
    report = out / "label_efficiency.md"
    report.write_text(markdown_report(rows, tasks, seeds, quick, seconds, {k: p.name for k, p in plots.items()}, command))
    files.update({"report": report, **{f"plot_{k}": p for k, p in plots.items()}})
    if docs is not None:
        docs = Path(docs)
        images = docs.parent / "images"
        images.mkdir(parents=True, exist_ok=True)
        links = {}
        for name, path in plots.items():
            shutil.copyfile(path, images / path.name)
            links[name] = f"images/{path.name}"
        docs.write_text(markdown_report(rows, tasks, seeds, quick, seconds, links, command))
        files["docs"] = docs
    return files
