"""Synthetic Cell Tracking Challenge time-lapses for the PMC study (bundle `pmc_detection`).

Two sequences of 30 frames of 192 x 192 px with gold segmentation on every 3rd frame (20 annotated frames,
40 without annotation). Nuclei are ~24 px across (cell radius 24-40 px), the size of the paper's nuclei
once its frames are resized to 384 px; the layout's default cells (~14 px nuclei) are too small for the
quick network to learn in a CPU-sized run.

    .venv/bin/python scripts/make_pmc_study_data.py --out CTC [--seed 0]
    cellzoo study pmc_detection --data CTC --sizes 1,4 --seeds 0,1,2 --quick --out ...
"""

from __future__ import annotations

import argparse

from cellzoo.synthetic import synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    path = synthesize("ctc", args.frames, args.out, seed=args.seed, size=(args.size, args.size), n_sequences=2,
                      cell_radius=(24, 40))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
