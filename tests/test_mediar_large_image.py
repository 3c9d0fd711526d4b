"""A 4096 x 4096 image through the MEDIAR bundle's inference config (quick network) with bounded memory.

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

# The bundle's own inference config (quick network) in one process, so its peak RSS covers all of it.
CHILD = r"""
import json, resource, sys, time
from cellzoo.bundles import run_config

ckpt, images, out = sys.argv[1:4]
started = time.perf_counter()
run_config("mediar_cellseg", "inference", quick=True, input_dir=images, output_dir=out, checkpoints=[ckpt],
           roi_size=256, sw_overlap=0.25, tta=False, predict_tile_size=2048, num_workers=0)
print(json.dumps({"seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_4096_image_in_tiles_with_bounded_memory(quick_mediar, tmp_path):
    field = render_field(size=(512, 512), seed=5, modalities=("nuclear",), density="medium")
    image = np.tile((field["images"]["nuclear"] * 4000).astype(np.uint16), (8, 8))  # 4096 x 4096
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "big.tif", image)
    result = subprocess.run([sys.executable, "-c", CHILD, str(quick_mediar["ckpt"]), str(tmp_path / "images"),
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print("4096x4096 inference:", json.dumps(report))
    # the bundle's logging config sends the predictor's INFO log (how it tiles the image) to stdout
    assert "image (4096, 4096) split into 4 tiles of <= 2048 px with a 64 px halo" in result.stdout
    assert report["peak_rss_mb"] < PEAK_RSS_LIMIT_MB, report
    labels = tifffile.imread(tmp_path / "out" / "labels" / "big_label.tiff")
    assert labels.shape == (4096, 4096)
    # the image repeats one 512-px field 64 times: about 64x its cells must be found (tile seams included)
    expected = 64 * len(np.unique(field["labels_nuclei"])[1:])
    assert 0.6 * expected < labels.max() < 1.4 * expected
    assert (tmp_path / "out" / "measurements" / "big_cells.csv").is_file()
    assert (tmp_path / "out" / "overlays" / "big_overlay.png").is_file()
