"""`--resume true` for a bundle's trainer: periodic training states, the newest one restored, best score kept."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from monai.handlers import CheckpointLoader, CheckpointSaver

logger = logging.getLogger(__name__)


def latest_checkpoint(folder: str | Path, pattern: str = "*.pt") -> str | None:
    """The most recently written checkpoint in `folder` (None when there is none): the resume point."""
    folder = Path(folder)
    candidates = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return str(candidates[-1]) if candidates else None


class TrainingResume:
    """Save the whole training state every `interval` iterations to `save_dir`; with `resume`, load the newest.

    `state` maps names to objects with state dicts (model, optimizer, lr scheduler, trainer). MONAI's
    CheckpointSaver writes atomically and keeps one file, so a kill never leaves a half-written state;
    MONAI's CheckpointLoader restores it with weights_only=True. `save` is False on the processes of a
    multi-GPU run other than rank 0, which load but do not write.

    `best_model` is the validator's key-metric CheckpointSaver (configured with key_metric_save_state, so
    its record of the best score is stored inside `best_model_file`). On resume that record is restored,
    so the best model is replaced only by a score strictly better than the best before the interruption;
    without it the first validation after a resume would always count as a new best.
    """

    def __init__(self, save_dir: str | Path, state: dict, interval: int = 20, resume: bool = False,
                 save: bool = True, map_location: str | torch.device | None = None,
                 best_model: CheckpointSaver | None = None, best_model_file: str | Path | None = None):
        self.save_dir, self.state, self.interval = Path(save_dir), state, int(interval)
        self.resume, self.save, self.map_location = bool(resume), bool(save), map_location
        self.best_model, self.best_model_file = best_model, best_model_file

    def attach(self, trainer) -> None:
        """Register the saver (and, when resuming, the loader) on `trainer`."""
        if self.save:
            CheckpointSaver(str(self.save_dir), save_dict=self.state, save_interval=self.interval,
                            epoch_level=False, n_saved=1).attach(trainer)
        if not self.resume:
            return
        path = latest_checkpoint(self.save_dir)
        if path is None:
            logger.warning("--resume true, but %s holds no training state: training starts from the beginning",
                           self.save_dir)
            return
        logger.info("resuming from %s", path)
        CheckpointLoader(path, load_dict=self.state, map_location=self.map_location).attach(trainer)
        self._restore_best_score()

    def _restore_best_score(self) -> None:
        if self.best_model is None or self.best_model_file is None or not Path(self.best_model_file).is_file():
            return
        saved = torch.load(self.best_model_file, map_location="cpu", weights_only=True)
        if isinstance(saved, dict) and "checkpointer" in saved:
            self.best_model.load_state_dict(saved["checkpointer"])
            logger.info("best score so far restored from %s: %s", self.best_model_file, saved["checkpointer"])
