"""The human-in-the-loop cycle (predict, correct, fine-tune, predict again) without a GUI; cellzoo.napari
puts it in a napari widget."""

from cellzoo.interactive.background import BackgroundRun, Cancelled, progress_of
from cellzoo.interactive.loop import (
    FineTuneJob,
    Prediction,
    PredictionJob,
    can_fine_tune,
    fine_tune_recipe,
    save_annotations,
    train_command,
)

__all__ = ["BackgroundRun", "Cancelled", "FineTuneJob", "Prediction", "PredictionJob", "can_fine_tune",
           "fine_tune_recipe", "progress_of", "save_annotations", "train_command"]
