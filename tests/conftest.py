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


@pytest.fixture(autouse=True)
def log_handlers_on_an_open_stream():
    """A bundle run configures logging (logging.conf) with a handler on the sys.stderr of that moment, which in
    a test is capsys's stream, closed when the test ends; a later test's bundle run would then print
    "--- Logging error ---" tracebacks. Outside tests sys.stderr never closes, so the test session re-points
    such handlers at the current stderr before each test."""
    import logging
    import sys

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for handler in (h for logger in loggers for h in logger.handlers):
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            handler.stream = sys.stderr  # not setStream: it flushes the closed stream first
    yield
