"""Lay out the real data of the PMC benchmarks as the bundle reads it, by symbolic links (no copies).

- `gowt1_ctc/`: the 8 annotated Fluo-N2DH-GOWT1 frames of ctc_gowt1_seg in Cell Tracking Challenge layout
  (01/t021.tif + 01_GT/SEG/man_seg021.tif, ... and sequence 02), for detection training and testing;
- `ctc_gowt1_tra` is already in CTC layout (20 frames of sequence 01, no masks): the pretext's data
  (`--pretrain-data`), used as it is;
- `dsb_cellseg/`: the 11 dsb2018_stage1test images with their masks in CellSeg layout
  (images/<id>.png, labels/<id>_label.tif).

    .venv/bin/python scripts/prepare_pmc_realdata.py --out REAL
    cellzoo study pmc_detection --task detection_pretrain_data --data REAL/gowt1_ctc \\
        --pretrain-data ../shared/realdata/ctc_gowt1_tra --n-test 4 --sizes 1,4 --seeds 0,1,2 --quick ...
    cellzoo study pmc_detection --data REAL/dsb_cellseg --n-test 4 --sizes 2,7 ... --quick
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
GOWT1_IMAGE = re.compile(r"^(\d{2})_t(\d{3})\.tif$")


def link(target: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target.resolve())


def gowt1_ctc(source: Path, out: Path) -> Path:
    """images/<seq>_tNNN.tif + labels/<seq>_man_segNNN.tif -> <seq>/tNNN.tif + <seq>_GT/SEG/man_segNNN.tif."""
    for image in sorted((source / "images").glob("*.tif")):
        match = GOWT1_IMAGE.match(image.name)
        if not match:
            continue
        seq, frame = match.groups()
        link(image, out / seq / f"t{frame}.tif")
        link(source / "labels" / f"{seq}_man_seg{frame}.tif", out / f"{seq}_GT" / "SEG" / f"man_seg{frame}.tif")
    return out


def dsb_cellseg(source: Path, out: Path) -> Path:
    """images/<id>.png + labels/<id>.tif -> images/<id>.png + labels/<id>_label.tif."""
    for image in sorted((source / "images").glob("*.png")):
        link(image, out / "images" / image.name)
        link(source / "labels" / f"{image.stem}.tif", out / "labels" / f"{image.stem}_label.tif")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    args = parser.parse_args()
    if not args.realdata.is_dir():
        raise SystemExit(f"real data not found at {args.realdata}")
    print(gowt1_ctc(args.realdata / "ctc_gowt1_seg", args.out / "gowt1_ctc"))
    print(dsb_cellseg(args.realdata / "dsb2018_stage1test", args.out / "dsb_cellseg"))
    print(f"pretext data: {args.realdata / 'ctc_gowt1_tra'}")


if __name__ == "__main__":
    main()
