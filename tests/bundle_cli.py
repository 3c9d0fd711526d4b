"""Run bundle configs the way users do: `python -m monai.bundle run` (or under torchrun) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cellzoo.bundles import bundle_path


def bundle_command(bundle: str, configs: list[str], *args: str, launcher: list[str] | None = None) -> list[str]:
    """The command line for `configs` (names in the bundle's configs/, or paths) plus overrides `args`."""
    folder = bundle_path(bundle) / "configs"
    files = [str(folder / f"{c}.yaml") if "/" not in c else c for c in configs]
    runner = launcher if launcher is not None else [sys.executable]
    return [*runner, "-m", "monai.bundle", "run", "--config_file", repr(files),
            "--meta_file", str(folder / "metadata.json"), "--logging_file", str(folder / "logging.conf"), *args]


def run_bundle(bundle: str, configs: list[str], *args: str, launcher: list[str] | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """Run and require success; returns the finished process (stdout and stderr as text)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if launcher else None  # two processes share two cores
    result = subprocess.run(bundle_command(bundle, configs, *args, launcher=launcher), capture_output=True,
                            text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def torchrun(nproc: int) -> list[str]:
    """A torchrun launcher for `nproc` local processes."""
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"]
