"""Synthetic microscopy with exact ground truth: fields, time-lapses and dataset layouts for every method."""

from cellzoo.synthetic.layouts import LAYOUTS, layout_options, overview_figure, synthesize
from cellzoo.synthetic.optics import DEFAULT_MODALITIES, MODALITIES, add_noise, defocus_sigma, render_field
from cellzoo.synthetic.timelapse import render_timelapse

__all__ = ["DEFAULT_MODALITIES", "LAYOUTS", "MODALITIES", "add_noise", "defocus_sigma", "layout_options",
           "overview_figure", "render_field", "render_timelapse", "synthesize"]
