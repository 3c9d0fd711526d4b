"""scripts/gpu_check.py: its step timer on a known split of time, and its dry run (the CPU, quick configs) for a
segmenter with sliding windows and for the detector, each step a JSON line with the figures the GPU run prints."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellzoo.engines.timing import StepTimer

ROOT = Path(__file__).resolve().parents[1]


class SlowData:
    """Four batches, each taking 50 ms to arrive."""

    def __iter__(self):
        for i in range(4):
            time.sleep(0.05)
            yield {"image": [i, i]}


def test_step_timer_splits_waiting_for_data_from_the_step(tmp_path):
    from ignite.engine import Engine

    def step(engine, batch):
        time.sleep(0.05)
        return {"loss": 1.0 / engine.state.iteration}

    engine = Engine(step)
    StepTimer(tmp_path / "timing.json", warmup=1).attach(engine)
    engine.run(SlowData(), max_epochs=1)
    summary = json.loads((tmp_path / "timing.json").read_text())
    assert summary["iterations"] == 4 and summary["timed_iterations"] == 3
    assert 0.3 < summary["data_wait_share"] < 0.7  # 50 ms waiting, 50 ms computing
    assert summary["first_loss"] == 1.0 and summary["last_loss"] == 0.25
    assert 0.09 < summary["s_per_iteration"] < 0.3 and 10 < summary["samples_per_s"] < 22  # 2 samples a batch
    assert "network_s_per_iteration" not in summary  # a plain ignite engine has no forward event


@pytest.mark.slow
def test_dry_run_prints_a_line_per_step_with_the_figures(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--bundles",
                             "mediar_cellseg,cupre_instance_seg", "--work", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["step"] == "machine" and lines[0]["gpus"] == 0 and lines[0]["torch"]
    steps = {(line["bundle"], line["step"]): line for line in lines[1:]}
    assert set(steps) == {(b, s) for b in ("mediar_cellseg", "cupre_instance_seg") for s in ("train", "infer")}
    for bundle in ("mediar_cellseg", "cupre_instance_seg"):
        train, infer = steps[bundle, "train"], steps[bundle, "infer"]
        assert train["ok"] and infer["ok"]
        assert train["train"]["iterations"] == 4 and train["train"]["samples_per_s"] > 0
        assert 0 <= train["train"]["data_wait_share"] < 1 and train["train"]["first_loss"] > 0
        assert train["validate"]["iterations"] >= 1  # the one validation, timed
        assert infer["infer"]["iterations"] == 1 and infer["infer"]["network_s_per_mp"] > 0
        assert infer["infer"]["total_s_per_mp"] >= infer["infer"]["network_s_per_mp"]
