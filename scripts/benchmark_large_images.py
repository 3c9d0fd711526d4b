"""Time and peak memory of streamed prediction against image size, per segmenting bundle (quick, shipped weights).

    python scripts/benchmark_large_images.py [--sizes 4096,8192,16384,32768]
        [--bundles mediar_cellseg,cupre_instance_seg,isl_segmentation] [--cell-px 2048] [--work large_work]

For each size, an OME-Zarr (NGFF 0.4, uint16, 1024-px chunks) of that side is written with synthetic
nuclei fields over its top-left `--cell-px` square (the same cells at every size; the rest is blank
background, so a 32k image costs seconds to write) and streamed by `cellzoo predict` in a child process
(1024-px regions, 96-px halo, no TTA), whose peak resident memory is read. Prints one table row per run:
regions, regions predicted, seconds, peak RSS, cells found. With the cells fixed, what grows with the size
is the bookkeeping (regions read and found blank, the output store); memory should stay flat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

CHILD = r"""
import json, sys
from cellzoo.memory import peak_rss_mb
from cellzoo.inference.streaming import stream_predict
bundle, source, out = sys.argv[1:4]
summary = stream_predict(bundle, source, out, settings=json.loads(sys.argv[4]), region_size=1024, halo=96,
                         progress=False, overwrite=True)
summary["peak_rss_mb"] = peak_rss_mb()
print(json.dumps(summary))
"""
SETTINGS = {"mediar_cellseg": {"tta": False}, "isl_segmentation": {"tta": False}}


def write_image(path: Path, size: int, cell_px: int) -> Path:
    from cellzoo.benchmarks.samples import synthetic_nuclei

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=(size, size), chunks=(1024, 1024), dtype="uint16", fill_value=0)
    fields = synthetic_nuclei((cell_px // 512) ** 2, 0, seed=7, size=(512, 512))[0]
    for k, field in enumerate(fields):
        y, x = divmod(k, cell_px // 512)
        array[y * 512:(y + 1) * 512, x * 512:(x + 1) * 512] = field.image
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,8192,16384,32768")
    parser.add_argument("--bundles", default="mediar_cellseg,cupre_instance_seg,isl_segmentation")
    parser.add_argument("--cell-px", type=int, default=2048)
    parser.add_argument("--work", type=Path, default=Path("large_work"))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    print("| bundle | image | regions (predicted) | seconds | peak RSS MB | cells |\n| --- | --- | --- | --- | --- | --- |")
    for size in [int(s) for s in args.sizes.split(",")]:
        source = write_image(args.work / f"image_{size}.ome.zarr", size, args.cell_px)
        for bundle in args.bundles.split(","):
            out = args.work / f"{bundle}_{size}.ome.zarr"
            result = subprocess.run([sys.executable, "-c", CHILD, bundle, str(source), str(out),
                                     json.dumps(SETTINGS.get(bundle, {}))], capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stderr[-2000:], file=sys.stderr)
                return 1
            summary = json.loads(result.stdout.strip().splitlines()[-1])
            labels = zarr.open_group(str(out), mode="r")["0"][:args.cell_px + 96, :args.cell_px + 96]
            cells = len(np.unique(labels[labels > 0]))
            print(f"| {bundle} | {size} x {size} | {summary['regions']} ({summary['predicted']}) | "
                  f"{summary['seconds']:.1f} | {summary['peak_rss_mb']:.0f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
