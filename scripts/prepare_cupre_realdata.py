"""Real data for the CUPre bundle in COCO layout, written outside the repository (the licences of several sets
forbid redistribution): DSB2018 stage-1 test and the three Cell Tracking Challenge SEG sets converted from
their label images with the platform's converter (`cellzoo.io.label_image_to_coco`, through
`cellzoo.methods.cupre.labels_to_coco_folder`), and coco_derived with one of its two equivalent JSON files.

    .venv/bin/python scripts/prepare_cupre_realdata.py --out /work/runs/cupre/real [--realdata ../shared/realdata]

Writes <out>/dsb2018 (11 images), <out>/ctc (GOWT1 8 + HeLa 2 + MSC 3 frames, one JSON per source set) and
<out>/coco_derived (3 images); prints the image and object counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cellzoo.io import load_coco_json
from cellzoo.methods.cupre import coco_items, labels_to_coco_folder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    args = parser.parse_args()
    real, out = args.realdata, args.out
    if out.resolve().is_relative_to(ROOT.resolve()):
        raise SystemExit("write real data outside the repository (their licences forbid redistribution)")
    labels_to_coco_folder(real / "dsb2018_stage1test" / "images", real / "dsb2018_stage1test" / "labels", out / "dsb2018",
                          category="nucleus")
    for name, category in (("ctc_gowt1_seg", "nucleus"), ("ctc_hela_seg", "nucleus"), ("ctc_msc_seg", "cell")):
        labels_to_coco_folder(real / name / "images", real / name / "labels", out / "ctc", json_name=f"{name}.json",
                              category=category)
    derived = out / "coco_derived"
    (derived / "images").mkdir(parents=True, exist_ok=True)
    for image in (real / "coco_derived" / "images").iterdir():
        shutil.copyfile(image, derived / "images" / image.name)
    shutil.copyfile(real / "coco_derived" / "annotations_polygons_plus_rle.json", derived / "annotations.json")
    summary = {}
    for folder in ("dsb2018", "ctc", "coco_derived"):
        items = coco_items(out / folder)
        summary[folder] = {"images": len(items), "objects": sum(len(e["annotations"]) for e in items)}
    summary["coco_derived_check"] = len(load_coco_json(derived / "annotations.json")["annotations"])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
