"""`cellzoo isl-fewshot` on synthetic ISL data with the quick config: the ISL-pretrained nucleus model beats
the one trained from scratch when a single labelled field is available (the paper's headline result)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from cellzoo.synthetic import synthesize

pytestmark = pytest.mark.slow


def test_pretrained_ahead_of_scratch_at_one_field(tmp_path):
    data = synthesize("isl", 10, tmp_path / "fields", seed=0, size=(96, 96))
    out = tmp_path / "study"
    result = subprocess.run([sys.executable, "-m", "cellzoo.cli", "isl-fewshot", "--data", str(data), "--sizes", "1",
                             "--task", "nuclei", "--quick", "--out", str(out), "--n-test", "3"],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "fewshot_nuclei.csv") as handle:
        rows = {row["init"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"scratch", "pretrained"}
    for row in rows.values():
        assert row["n_train"] == "1" and row["metric"] == "iou" and row["n_test_fields"] == "3"
        assert 0.0 <= float(row["value"]) <= 1.0
    assert float(rows["pretrained"]["value"]) > float(rows["scratch"]["value"])
    assert (out / "fewshot_nuclei.png").stat().st_size > 1000
    assert "pretrained" in result.stdout and "scratch" in result.stdout


def test_fewshot_refuses_sizes_beyond_the_pool(tmp_path):
    data = synthesize("isl", 4, tmp_path / "fields", seed=0, size=(64, 64))
    result = subprocess.run([sys.executable, "-m", "cellzoo.cli", "isl-fewshot", "--data", str(data), "--sizes", "1,5",
                             "--task", "nuclei", "--quick", "--out", str(tmp_path / "o"), "--n-test", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "--sizes must lie in 1..3" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
