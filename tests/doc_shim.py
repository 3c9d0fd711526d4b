"""What the doc test puts between a documented command and the code, so that a page's block runs as written on
this CPU in seconds. The docs give paper-scale commands and say "for the small CPU version add quick.yaml";
the shim does exactly that, and caps the training budget, nothing else:

- `python -m monai.bundle run --config_file X ...`: `<configs of X>/quick.yaml` joins the end of the config list
  (unless given), and a training config (any list with train.yaml) runs 1 epoch of 2 samples, validated once;
- `cellzoo predict ... --checkpoint C`: `--quick` is added (a checkpoint the block trained is a quick one).

tests/test_docs_commands.py puts `python` and `cellzoo` wrappers first on PATH that hand the command to
tests/doc_forkserver.py, whose forked child calls `main(["bundle-run", *ARGS])` / `main(["cellzoo", *ARGS])`
(or run `python doc_shim.py bundle-run ARGS` directly).
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

BUDGET = {"max_epochs": "1", "samples_per_epoch": "2", "val_interval": "1"}


def with_option(args: list[str], name: str, value: str) -> list[str]:
    """args with `--name value` set (replacing a given value, `--name=value` included)."""
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
            continue
        if word == f"--{name}":
            skip = True
            continue
        if not word.startswith(f"--{name}="):
            out.append(word)
    return [*out, f"--{name}", value]


def cpu_sized(args: list[str]) -> list[str]:
    """The runner's arguments with quick.yaml added to the config list and, for training, the test budget."""
    if "--config_file" not in args:
        return args
    value = args[args.index("--config_file") + 1]
    files = ast.literal_eval(value) if value.startswith("[") else [value]
    quick = str(Path(files[0]).parent / "quick.yaml")
    if not any(Path(f).name == "quick.yaml" for f in files):
        files.append(quick)
    args = with_option(args, "config_file", repr(files))
    if any(Path(f).name == "train.yaml" for f in files):
        for name, budget in BUDGET.items():
            args = with_option(args, name, budget)
    return args


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "bundle-run":
        sys.argv = ["monai.bundle", "run", *cpu_sized(args)]
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    elif kind == "cellzoo":
        if args[:1] == ["predict"] and any(a.startswith("--checkpoint") for a in args) and "--quick" not in args:
            args.append("--quick")
        from cellzoo.cli import main as cellzoo_main

        cellzoo_main(args)
    elif kind == "monai-bundle":  # `python -m monai.bundle ARGS` exactly as given (tests/bundle_cli.py)
        sys.argv = ["monai.bundle", *args]
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    else:
        raise SystemExit(f"doc_shim: unknown kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
