"""Fine-tuning MEDIAR on one or two labelled images must not collapse (quick config, CPU).

A base model is quick-trained on synthetic nuclear-fluorescence images; it is then fine-tuned on two
labelled images of another modality (membrane fluorescence) with the bundle's guards (learning-rate
warm-up, cell memory replay of the base data). Its F1 on held-out images of both modalities must stay
well above zero. A control run without the guards and with a reckless learning rate shows that the
check can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellzoo.bundles import run_config
from cellzoo.synthetic import synthesize

pytestmark = pytest.mark.slow
SIZE = (160, 160)


def evaluate(ckpt: Path, data: Path, out: Path) -> float:
    run_config("mediar_cellseg", "evaluate", quick=True, dataset_dir=str(data), checkpoints=[str(ckpt)],
               output_dir=str(out), tta=False)
    return json.loads((out / "metrics.json").read_text())["f1"]


def test_few_label_finetuning_keeps_f1(quick_mediar):
    base = quick_mediar
    root = base["root"]
    target = synthesize("cellseg", 2, root / "target", seed=21, size=SIZE, modalities=("membrane",))
    heldout = synthesize("cellseg", 3, root / "heldout", seed=22, size=SIZE, modalities=("nuclear", "membrane"))
    before = evaluate(base["ckpt"], heldout, root / "eval_before")
    assert before > 0.5, f"base model too weak for a meaningful check (F1 {before:.3f})"

    run_config("mediar_cellseg", "train", quick=True, dataset_dir=str(target), replay_dir=str(base["public"]),
               pretrained_ckpt=str(base["ckpt"]), ckpt_dir=str(root / "tuned"), output_dir=str(root / "runs_tuned"),
               max_epochs=4, val_interval=1, learning_rate=2.0e-4, warmup_epochs=2)
    after = evaluate(root / "tuned" / "model.pt", heldout, root / "eval_after")
    assert after > 0.3 and after >= 0.5 * before, f"fine-tuning collapsed: F1 {before:.3f} -> {after:.3f}"

    # control: no warm-up, no replay, a learning rate far too high -> the same check catches the collapse
    run_config("mediar_cellseg", "train", quick=True, dataset_dir=str(target), pretrained_ckpt=str(base["ckpt"]),
               ckpt_dir=str(root / "reckless"), output_dir=str(root / "runs_reckless"), max_epochs=2, val_interval=2,
               learning_rate=1.0, warmup_epochs=0)
    reckless = evaluate(root / "reckless" / "model.pt", heldout, root / "eval_reckless")
    print(f"few-label fine-tuning F1@0.5: base {before:.3f} -> fine-tuned {after:.3f}; reckless control {reckless:.3f}")
    assert reckless < 0.5 * before, f"control run did not collapse (F1 {reckless:.3f}); the check would be blind"
