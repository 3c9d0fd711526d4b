"""A 4096 x 4096 image through MEDIAR inference (quick config) with bounded memory.

Runs in a child process so its peak resident memory can be read; the image is predicted in 2048-px tiles
with a halo, and the label image, CSV and overlay are written like any other image.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from cellzoo.synthetic import render_field

pytestmark = pytest.mark.slow
PEAK_RSS_LIMIT_MB = 4096

CHILD = r"""
import json, resource, sys
import torch
from cellzoo.bundles import bundle_path
from monai.bundle import ConfigParser
from cellzoo.segmentation import FlowSegmenter
from cellzoo.transforms.mediar_augment import mediar_predict_transforms
from cellzoo.engines.checkpoints import load_weights

ckpt, image, out = sys.argv[1:4]
configs = bundle_path("mediar_cellseg") / "configs"
parser = ConfigParser()
parser.read_config([str(configs / "inference.yaml"), str(configs / "quick.yaml")])
network = load_weights(parser.get_parsed_content("network_def"), ckpt)
segmenter = FlowSegmenter(network, mediar_predict_transforms(load=False), roi_size=256, overlap=0.25, tta=False,
                          sw_batch_size=8, predict_tile_size=2048, flow_threshold=0.0, progress=False)
tiles = len(segmenter.predictor._tiles((4096, 4096)))
segmenter.run([image], out)
print(json.dumps({"tiles": tiles, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "timings": segmenter.timings}))
"""


def test_4096_image_in_tiles_with_bounded_memory(quick_mediar, tmp_path):
    field = render_field(size=(512, 512), seed=5, modalities=("nuclear",), density="medium")
    image = np.tile((field["images"]["nuclear"] * 4000).astype(np.uint16), (8, 8))  # 4096 x 4096
    tifffile.imwrite(tmp_path / "big.tif", image)
    result = subprocess.run([sys.executable, "-c", CHILD, str(quick_mediar["ckpt"]), str(tmp_path / "big.tif"),
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("4096x4096 inference:", json.dumps(report))
    assert report["tiles"] == 4
    assert report["peak_rss_mb"] < PEAK_RSS_LIMIT_MB, report
    labels = tifffile.imread(tmp_path / "out" / "labels" / "big_label.tiff")
    assert labels.shape == (4096, 4096)
    # the image repeats one 512-px field 64 times: about 64x its cells must be found (tile seams included)
    expected = 64 * len(np.unique(field["labels_nuclei"])[1:])
    assert 0.6 * expected < labels.max() < 1.4 * expected
    assert (tmp_path / "out" / "measurements" / "big_cells.csv").is_file()
    assert (tmp_path / "out" / "overlays" / "big_overlay.png").is_file()
