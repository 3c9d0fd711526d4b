"""Shared fixtures: the real data folder and a quick-trained MEDIAR checkpoint."""

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
