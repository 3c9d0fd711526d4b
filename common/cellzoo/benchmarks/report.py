"""The label-efficiency benchmark's results as files: one long CSV, one plot per task, a markdown report.

Tables and plots show each (method, arm) as one column or line: the mean over seeds with the sample
standard deviation, against the number of labelled training images N. The report adds the wall time of
every fine-tuning and pretraining, the validation curves of the largest budget, and per paper whether the
benchmark shows the direction of its claim.
"""

from __future__ import annotations

import os
import statistics
import platform
import shutil
import time
from pathlib import Path

from cellzoo.benchmarks.claims import CLAIMS, KINDS
from cellzoo.engines.convergence import read_curve
from cellzoo.studies.report import markdown_table, summarise, write_csv

COLUMNS = ("task", "method", "arm", "n", "seed", "metric", "value")
TIME_COLUMNS = ("task", "method", "arm", "n", "seed", "step", "minutes", "stopped", "plateau")
CONVERGED_NOTE = ("quick (CPU-sized) networks, every fine-tuning and pretraining trained until its validation score "
                  "stopped improving (each config's convergence rule: patience, a minimum, a maximum and a 10-minute "
                  "guard), the same rule for every method and arm; cellpose under the same rule")
SMOKE_NOTE = ("SMOKE RUN: quick networks with fixed tiny budgets (study.yaml `smoke:`), which checks that every step "
              "runs; its figures measure under-training, not the methods")


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


def plot_curves(curves: list[tuple[str, Path]], seed: int, n: int, path: Path, title: str) -> Path | None:
    """One panel per method: the validation score against training progress, one line per arm (seed, N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(method, folder) for method, folder in curves if list(folder.glob(f"seed{seed}/*/n{n}/training_curve.csv"))]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), dpi=110, squeeze=False)
    for ax, (method, folder) in zip(axes[0], panels):
        for curve in sorted(folder.glob(f"seed{seed}/*/n{n}/training_curve.csv")):
            rows = [r for r in read_curve(curve) if r["val_metric"] is not None]
            ax.plot([r["iteration"] for r in rows], [r["val_metric"] for r in rows], marker=".", label=curve.parts[-3])
        ax.set_title(method.split("_")[0], fontsize=9)
        ax.set_xlabel("iterations")
        ax.set_ylabel("validation score")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{title}: validation during training (seed {seed}, N = {n})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def claim_verdicts(rows: list[dict], claims) -> list[dict]:
    """Per claim, task and N: the mean paired difference (arm - baseline, same seed) and the verdict: "yes" when
    every seed's difference is positive, "no" when every one is negative, else "within noise"."""
    verdicts = []
    for claim in claims:
        values = {(r["task"], r["arm"], r["n"], r["seed"]): r["value"] for r in rows
                  if r["method"] == claim.method and r["metric"] == claim.metric}
        for task, n in sorted({(t, n) for t, arm, n, _ in values if arm == claim.arm}):
            diffs = [values[(task, claim.arm, n, s)] - values[(task, claim.baseline, n, s)]
                     for (t, arm, m, s) in values if (t, arm, m) == (task, claim.arm, n)
                     and (task, claim.baseline, n, s) in values]
            if diffs:
                verdict = "yes" if min(diffs) > 0 else "no" if max(diffs) < 0 else "within noise"
                verdicts.append({"claim": claim, "task": task, "n": n, "mean": statistics.mean(diffs),
                                 "seeds": len(diffs), "verdict": verdict})
    return verdicts


def _claims_section(rows: list[dict], times: list[dict] = ()) -> list[str]:
    lines = ["## The papers' claims", "",
             "Per claim, task and budget N: the mean over seeds of the paired difference (arm minus baseline, same "
             "seed and training set). Shown: **yes** when every seed's difference has the claimed sign, **no** when "
             "every one has the other sign, **within noise** otherwise. *On a plateau*: of the fine-tunings of both "
             "arms, those that stopped because they had stopped improving (the others are lower bounds).", ""]
    verdicts = claim_verdicts(rows, CLAIMS)
    for claim in CLAIMS:
        mine = [v for v in verdicts if v["claim"] is claim]
        lines += [f"**{claim.paper}**: {claim.text}", ""]
        if not mine:
            lines += [f"Not measured here: {claim.absent}" if claim.absent else "No results.", ""]
            continue
        lines += ["| task | N | seeds | mean difference | shown | on a plateau |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {v['task']} | {v['n']} | {v['seeds']} | {v['mean']:+.3f} {claim.metric} | {v['verdict']} | "
                  f"{plateau_count(_claim_runs(times, claim, v['task'], v['n']))} |" for v in mine]
        lines.append("")
    return lines


def plateau_count(times: list[dict]) -> str:
    """'5 of 6': how many of these runs stopped because their validation score had stopped improving."""
    return f"{sum(bool(row.get('plateau')) for row in times)} of {len(times)}"


def _claim_runs(times: list[dict], claim, task: str, n: int) -> list[dict]:
    return [row for row in times if row["step"] == "fine-tune" and row["method"] == claim.method
            and row["task"] == task and row["n"] == n and row["arm"] in (claim.arm, claim.baseline)]


def _times_section(times: list[dict]) -> list[str]:
    """Mean wall minutes per (task, method, arm, N) for fine-tunings, and per pretraining, with how many of the
    runs stopped on a plateau (the others at a guard: the time limit or the maximum, possibly still learning)."""
    if not times:
        return []
    groups: dict[tuple, list[dict]] = {}
    for row in times:
        groups.setdefault((row["task"], row["step"], row["method"], row["arm"], row["n"]), []).append(row)
    lines = ["## Cost and convergence", "",
             "Minutes per run on this machine (mean over seeds, one CPU thread per study, two studies at once); "
             "an arm that starts from a pretraining also costs that pretraining (run once, with the first seed, and "
             "shared by the seeds' fine-tunings). *On a plateau*: "
             "the runs that stopped because their validation score had not improved for the patience of their "
             "config; the others stopped at a guard (10 minutes, or the maximum) and may still have been learning, "
             "so their figures are lower bounds.", "",
             "| task | step | method | arm | N | minutes (mean) | runs | on a plateau |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (task, step, method, arm, n), runs in sorted(groups.items()):
        minutes = statistics.mean(row["minutes"] for row in runs)
        lines.append(f"| {task} | {step} | {method} | {arm} | {n or '-'} | {minutes:.1f} | {len(runs)} | "
                     f"{plateau_count(runs)} |")
    return lines + [""]


def _wall_time(seconds: float, times) -> str:
    """This invocation's time, and the runs' own minutes: a resumed benchmark skips the steps done before."""
    run_minutes = sum(row["minutes"] for row in times)
    text = f"{seconds / 60:.0f} min for this invocation"
    return text + (f"; its runs took {run_minutes:.0f} min in all (two at a time, resumed ones included)"
                   if times else "")


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{'a CUDA GPU' if torch.cuda.is_available() else 'no GPU'}; one CPU thread per study")


def markdown_report(rows: list[dict], tasks: list, seeds: list[int], smoke: bool, seconds: float,
                    plots: dict[str, str], command: str, times: list[dict] = (),
                    curve_plots: dict[str, str] | None = None) -> str:
    """The report: how it was made, then per task its description, a table per metric and its plot."""
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
             f"- Configs: {SMOKE_NOTE if smoke else CONVERGED_NOTE}; seeds {', '.join(map(str, seeds))}",
             f"- Machine: {_machine()}",
             f"- Wall time: {_wall_time(seconds, times)}; written {time.strftime('%Y-%m-%d %H:%M %Z')}", ""]
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
        if task.name in (curve_plots or {}):
            lines += [f"![{task.name} curves]({curve_plots[task.name]})", ""]
    lines += _times_section(list(times)) + _claims_section(rows, list(times))
    return "\n".join(lines)


def write_benchmark_report(rows: list[dict], tasks: list, out: Path, seeds: list[int], smoke: bool, seconds: float,
                           docs: str | Path | None = None, command: str | None = None, times: list[dict] = (),
                           curves: list[tuple[str, str, Path]] = ()) -> dict[str, Path]:
    """<out>/label_efficiency.csv (and _times.csv), <out>/label_efficiency_<task>.png (and _curves.png),
    <out>/label_efficiency.md (and a copy of the report at `docs`, with its plots beside it in images/).
    `curves`: (task, method, study folder) of every finished study."""
    files = {"csv": write_csv(rows, out / "label_efficiency.csv", COLUMNS)}
    if times:
        files["times"] = write_csv(list(times), out / "label_efficiency_times.csv", TIME_COLUMNS)
    plots, curve_plots = {}, {}
    for task in tasks:
        task_rows = [row for row in rows if row["task"] == task.name]
        if task_rows:
            plots[task.name] = plot_task(task_rows, KINDS[task.kind], out / f"label_efficiency_{task.name}.png",
                                         task.name)
        curve = plot_curves([(m, f) for t, m, f in curves if t == task.name], seeds[0], max(task.sizes),
                            out / f"label_efficiency_{task.name}_curves.png", task.name)
        if curve is not None:
            curve_plots[task.name] = curve
    command = command or "cellzoo benchmark label-efficiency " + ("--quick " if smoke else "") + \
        f"--seeds {','.join(map(str, seeds))}"

    def render(link) -> str:
        return markdown_report(rows, tasks, seeds, smoke, seconds, {k: link(p) for k, p in plots.items()}, command,
                               times, {k: link(p) for k, p in curve_plots.items()})

    report = out / "label_efficiency.md"
    report.write_text(render(lambda path: path.name))
    files.update({"report": report, **{f"plot_{k}": p for k, p in plots.items()},
                  **{f"curves_{k}": p for k, p in curve_plots.items()}})
    if docs is not None:
        docs = Path(docs)
        images = docs.parent / "images"
        images.mkdir(parents=True, exist_ok=True)
        for path in [*plots.values(), *curve_plots.values()]:
            shutil.copyfile(path, images / path.name)
        docs.write_text(render(lambda path: f"images/{path.name}"))
        files["docs"] = docs
    return files
