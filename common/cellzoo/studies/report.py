"""A study's results as files: the long CSV, a plot of the key metric against N and a markdown table."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

COLUMNS = ("bundle", "task", "arm", "n", "seed", "metric", "value")


def write_csv(rows: list[dict], path: str | Path, columns: tuple[str, ...] = COLUMNS) -> Path:
    """One row per (bundle, task, arm, n, seed, metric), or per the given columns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def summarise(rows: list[dict], metric: str) -> dict[tuple[str, int], tuple[float, float, int]]:
    """(arm, n) -> (mean, sample sd (0 for one seed), number of seeds) of `metric`."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        if row["metric"] == metric:
            values[(row["arm"], int(row["n"]))].append(float(row["value"]))
    return {key: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for key, v in values.items()}


def markdown_table(rows: list[dict], metric: str) -> str:
    """Rows N, columns arms, cells 'mean ± sd'; a row's single best mean in bold."""
    summary = summarise(rows, metric)
    arms = list(dict.fromkeys(row["arm"] for row in rows))
    sizes = sorted({n for _, n in summary})
    counts = sorted({k for _, _, k in summary.values()})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    lines = [f"| N | {' | '.join(f'{arm} ({metric})' for arm in arms)} |", "| --- |" + " --- |" * len(arms)]
    for n in sizes:
        means = [summary[(arm, n)][0] for arm in arms if (arm, n) in summary]
        best = max(means) if means.count(max(means, default=math.nan)) == 1 and len(means) > 1 else math.nan
        cells = []
        for arm in arms:
            if (arm, n) not in summary:
                cells.append("-")
                continue
            mean, sd, k = summary[(arm, n)]
            text = f"{mean:.3f} ± {sd:.3f}" if k > 1 else f"{mean:.3f}"  # no spread from one seed
            cells.append(f"**{text}**" if mean == best else text)
        lines.append(f"| {n} | {' | '.join(cells)} |")
    lines.append("")
    lines.append(f"Mean ± sample standard deviation over {seeds} seed(s) (one seed: the value alone).")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], metric: str, path: str | Path, title: str = "") -> Path:
    """`metric` against N (log scale), one line per arm, mean ± sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    summary = summarise(rows, metric)
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    for arm in dict.fromkeys(row["arm"] for row in rows):
        points = sorted((n, mean, sd) for (a, n), (mean, sd, _) in summary.items() if a == arm)
        ns, means, sds = zip(*points)
        ax.errorbar(ns, means, yerr=sds, marker="o", capsize=3, label=arm)
    ax.set_xscale("log")
    sizes = sorted({n for _, n in summary})
    ax.set_xticks(sizes, [str(n) for n in sizes])  # the budgets themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled training items (N)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(rows: list[dict], metric: str, out: str | Path, name: str) -> dict[str, Path]:
    """<out>/<name>.csv, .png and .md; returns their paths."""
    out = Path(out)
    title = f"{rows[0]['bundle']}, {rows[0]['task']}" if rows else name
    table = out / f"{name}.md"
    table.write_text(f"# {title}\n\n" + markdown_table(rows, metric))
    return {"csv": write_csv(rows, out / f"{name}.csv"), "plot": plot(rows, metric, out / f"{name}.png", title),
            "table": table}
