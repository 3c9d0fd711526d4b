"""The bundles under test, found in bundles/ (each declares its data in configs/study.yaml), and running their
configs the way users do: `python -m monai.bundle run` (or under torchrun) in a subprocess.

Without a launcher, the run is a forked child of a fork server (tests/doc_forkserver.py, one per test
process, started on first use) that imported torch, MONAI and cellzoo once: a fresh interpreter spends
about 7 s of each run importing them, most of a quick run's time."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from cellzoo.bundles import bundle_path, config_chain, list_bundles
from cellzoo.studies import load_study


def bundles() -> list[str]:
    """Names of every bundle in bundles/."""
    return [info["name"] for info in list_bundles()]


def data_spec(bundle: str) -> dict:
    """What a bundle reads: its synthetic layout and where inference finds images (study.yaml `data`)."""
    return load_study(bundle).data


def train_configs(bundle: str) -> list[str]:
    """Names of a bundle's training configs: those whose merged files define a trainer (train#trainer)."""
    names = []
    for path in sorted((bundle_path(bundle) / "configs").glob("*.yaml")):
        if path.stem in ("study", "bioimageio"):
            continue
        merged = {}
        for file in config_chain(bundle, path.stem):
            merged.update(yaml.safe_load(file.read_text()) or {})
        if isinstance(merged.get("train"), dict) and "trainer" in merged["train"]:
            names.append(path.stem)
    return names


def config_list(bundle: str, configs: list[str]) -> list[str]:
    """Config files for `configs`: names in the bundle's configs/ (with the files they extend) or paths."""
    files: list[str] = []
    for config in configs:
        for path in [config] if "/" in config else map(str, config_chain(bundle, config)):
            if path not in files:
                files.append(path)
    return files


def bundle_command(bundle: str, configs: list[str], *args: str, launcher: list[str] | None = None) -> list[str]:
    """The command line for `configs` (names in the bundle's configs/, or paths) plus overrides `args`."""
    folder = bundle_path(bundle) / "configs"
    files = config_list(bundle, configs)
    runner = launcher if launcher is not None else [sys.executable]
    return [*runner, "-m", "monai.bundle", "run", "--config_file", repr(files),
            "--meta_file", str(folder / "metadata.json"), "--logging_file", str(folder / "logging.conf"), *args]


FORK_SERVER = Path(__file__).with_name("doc_forkserver.py")
_fork_server: dict = {}


def fork_server_socket() -> Path:
    """The socket of this test process's fork server, started on first use and stopped at exit."""
    if "socket" not in _fork_server:
        path = Path(tempfile.mkdtemp(prefix="cellzoo-forks-")) / "socket"  # a short path: sockets allow 108 bytes
        server = subprocess.Popen([sys.executable, str(FORK_SERVER), "serve", str(path)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        atexit.register(server.kill)
        _fork_server.update(socket=path, server=server)
    return _fork_server["socket"]


def run_bundle(bundle: str, configs: list[str], *args: str, launcher: list[str] | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """Run and require success; returns the finished process (stdout and stderr as text)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if launcher else None  # two processes share two cores
    command = bundle_command(bundle, configs, *args, launcher=launcher)
    if launcher is None:  # the same arguments, run by a forked child of the fork server
        command = [sys.executable, "-S", str(FORK_SERVER), str(fork_server_socket()), "monai-bundle", *command[3:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def torchrun(nproc: int) -> list[str]:
    """A torchrun launcher for `nproc` local processes."""
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"]
