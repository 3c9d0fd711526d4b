"""Shared fixtures: the real data folder, a quick-trained MEDIAR checkpoint, one-thread torch."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture(scope="session")
def quick_mediar(tmp_path_factory) -> dict[str, Path]:
    """A MEDIAR quick-config model trained for ~200 iterations on synthetic nuclear fluorescence."""
    from cellzoo.bundles import run_config
    from cellzoo.synthetic import synthesize

    root = tmp_path_factory.mktemp("quick_mediar")
    public = synthesize("cellseg", 10, root / "public", seed=20, size=(160, 160), modalities=("nuclear",))
    run_config("mediar_cellseg", "train", quick=True, dataset_dir=str(public), ckpt_dir=str(root / "base"),
               output_dir=str(root / "runs_base"), max_epochs=24, val_interval=4, n_folds=5)
    return {"root": root, "public": public, "ckpt": root / "base" / "model.pt"}


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on 2 shared cores, threading tiny tensors is ~10x slower, not faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
