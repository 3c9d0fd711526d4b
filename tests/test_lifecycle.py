"""Bundle lifecycle machinery on the CPU: MLflow tracking (real server and unreachable server), two-process
DDP training, resuming after a kill mid-epoch. The machinery (cellzoo.tracking, cellzoo.engines.resume,
multi_gpu_train.yaml) is the same for every bundle, so it is tested once, on MEDIAR's quick train config;
each bundle's own configs are checked by tests/test_bundle_conformance.py (properties, one training step,
MLflow patching, export)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import bundle_cli
from cellzoo.bundles import parse_config_value
from cellzoo.engines import latest_checkpoint, read_curve, read_state_dict
from cellzoo.synthetic import synthesize

BUNDLE, TRAIN = "mediar_cellseg", "train"
SHORT = ["--samples_per_epoch", "16", "--batch_size", "4", "--n_folds", "3"]  # 4 iterations per epoch
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthesize(bundle_cli.data_spec(BUNDLE)["layout"], 6, tmp_path_factory.mktemp("data") / "d", seed=3,
                      size=(128, 128))


def config_value(root: Path, key: str):
    """The value of `key` in the train config with bundle_root `root`."""
    return parse_config_value(BUNDLE, TRAIN, key, bundle_root=str(root))


def ckpt_path(root: Path) -> Path:
    return Path(config_value(root, "ckpt_dir")) / "model.pt"


def key_metric() -> str:
    return next(iter(parse_config_value(BUNDLE, TRAIN, "validate#key_metric")))


def train_args(data: Path, root: Path, *extra: str) -> list[str]:
    return ["--bundle_root", str(root), "--dataset_dir", str(data), *SHORT, *extra]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- MLflow

@contextlib.contextmanager
def running_mlflow_server(root: Path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend store; yields (URI, its process)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)  # its own process group: the server starts uvicorn and job workers
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(uri + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
        yield uri, server
    finally:
        if server.poll() is None:
            stop(server)
        log.close()


def stop(server: subprocess.Popen) -> None:
    """Stop the server and every worker it started (its process group)."""
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as (uri, _):
        yield uri


def read_run(tracking_uri: str, experiment: str):
    """The single run of `experiment` as (client, run)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def check_tracked_run(client, run, checkpoint: Path, tmp_path: Path, max_epochs: int) -> None:
    """Parameters, per-epoch metrics, the executed config and the best checkpoint are all in the run."""
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == str(max_epochs)
    assert float(run.data.params["learning_rate"]) > 0
    history = client.get_metric_history(run.info.run_id, key_metric())
    assert [m.step for m in history] == list(range(1, max_epochs + 1))
    assert all(0.0 <= m.value <= 1.0 for m in history)
    assert client.get_metric_history(run.info.run_id, "train_loss")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(re.fullmatch(r"config_\d{8}_\d{6}\.json", a) for a in artifacts), artifacts
    local = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path))
    assert Path(local).read_bytes() == checkpoint.read_bytes()


def test_mlflow_tracking_over_http(data, mlflow_server, tmp_path):
    root = tmp_path / "run"
    bundle_cli.run_bundle(BUNDLE, [TRAIN, "quick"], *train_args(data, root, "--max_epochs", "2"),
                          "--tracking", "mlflow", "--tracking_uri", mlflow_server, "--experiment_name", "http")
    client, run = read_run(mlflow_server, "http")
    check_tracked_run(client, run, ckpt_path(root), tmp_path, max_epochs=2)


def test_mlflow_unreachable_server_falls_back_to_local_store(data, tmp_path):
    """Nothing listens at the tracking URI: training warns and logs the run to the default local store."""
    root = tmp_path / "run"
    dead = f"http://127.0.0.1:{free_port()}"
    result = bundle_cli.run_bundle(BUNDLE, [TRAIN, "quick"], *train_args(data, root, "--max_epochs", "1"),
                                   "--tracking", "mlflow", "--tracking_uri", dead, "--experiment_name", "offline",
                                   "--resume", "true")
    log = result.stdout + result.stderr
    assert f"MLflow tracking server {dead} is unreachable" in log
    assert "--resume true, but" in log and "holds no training state: training starts from the beginning" in log
    # the fallback is the default store of `--tracking mlflow` without --tracking_uri: <output_dir>/mlruns.db
    local = Path(config_value(root, "output_dir")) / "mlruns.db"
    assert config_value(root, "tracking_uri") == f"sqlite:///{local}"
    client, run = read_run(f"sqlite:///{local}", "offline")
    check_tracked_run(client, run, ckpt_path(root), tmp_path, max_epochs=1)


def test_mlflow_server_that_dies_mid_run_loses_nothing(data, tmp_path):
    """The server is killed after the first epoch: training ends normally and the local store holds the whole run."""
    root = tmp_path / "run"
    with running_mlflow_server(tmp_path / "server") as (uri, server):
        command = bundle_cli.bundle_command(BUNDLE, [TRAIN, "quick"], *train_args(data, root, "--max_epochs", "3"),
                                            "--tracking", "mlflow", "--tracking_uri", uri, "--experiment_name", "dies")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Epoch[1] Complete" in line and server.poll() is None:
                stop(server)
        assert process.wait(timeout=600) == 0, "".join(lines[-50:])
    log = "".join(lines)
    assert log.count(f"MLflow tracking server {uri} went away") == 1
    local = f"sqlite:///{Path(config_value(root, 'output_dir')) / 'mlruns.db'}"
    client, run = read_run(local, "dies")
    check_tracked_run(client, run, ckpt_path(root), tmp_path, max_epochs=3)
    # every iteration's loss, including those logged to the server before it died
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == list(range(1, 13))


# ---------------------------------------------------------------- multi-GPU (DDP on the CPU)

def test_two_process_ddp_trains_identical_weights_with_one_validation_image(data, tmp_path):
    """Few labels, two processes: one validation image (MONAI's DistributedSampler used to stop the run
    before its first step), each process its own shard and seed, the weights identical at the end, and
    both processes stopping at the same epoch (the run ends rather than hanging)."""
    from cellzoo.io import read_cellseg

    root = tmp_path / "ddp"
    save_ranks = tmp_path / "save_ranks.yaml"
    # appended to finalize: each process saves the weights it ends with
    save_ranks.write_text('+finalize:\n  - "$torch.save(@network.module.state_dict(), '
                          "@output_dir + '/rank%d.pt' % @local_rank)\"\n")
    names = [entry["name"] for entry in read_cellseg(data)]
    bundle_cli.run_bundle(BUNDLE, [TRAIN, "quick", "multi_gpu_train", str(save_ranks)],
                          *train_args(data, root, "--max_epochs", "2", "--val_items", f"['{names[0]}']",
                                      "--train_items", str(names[1:])), launcher=bundle_cli.torchrun(2))
    out = Path(config_value(root, "output_dir"))
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    torch.manual_seed(0)
    network = parse_config_value(BUNDLE, TRAIN, "network_def", quick=True)
    parameters = {name for name, _ in network.named_parameters()}
    for key in parameters:  # the gradients were averaged: the same weights on both
        assert torch.equal(rank0[key], rank1[key]), key
    # BatchNorm statistics are not (each process normalised its own images since rank 0's last broadcast):
    # the proof that the processes trained on different samples
    assert any(not torch.equal(rank0[k], rank1[k]) for k in rank0.keys() - parameters if "running_mean" in k)
    # rank 0 saved the best model without DDP's "module." prefix, and training moved the weights
    best = read_state_dict(ckpt_path(root))
    assert best.keys() == rank0.keys()
    start = network.state_dict()
    assert any(not torch.equal(start[k], rank0[k]) for k in parameters)
    # both epochs validated on the one image; an epoch is SHORT's 16 samples over both processes (8 each,
    # batch 4: 2 steps), as on one process with the doubled batch
    curve = read_curve(ckpt_path(root).parent / "training_curve.csv")
    assert [(row["epoch"], row["iteration"]) for row in curve] == [(1, 2), (2, 4)]
    assert all(row["val_metric"] is not None for row in curve)


# ---------------------------------------------------------------- resume after a kill mid-epoch

ITER_LINE = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- train_loss")


def test_resume_after_kill_mid_epoch(data, tmp_path):
    root = tmp_path / "resume"
    args = train_args(data, root, "--max_epochs", "3", "--checkpoint_interval", "1", "--val_interval", "3")
    command = bundle_cli.bundle_command(BUNDLE, [TRAIN, "quick"], *args)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # kill as soon as the state after iteration 6 (epoch 2, iteration 2/4) is saved
        if "Saved checkpoint at iteration: 6" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    resume_dir = ckpt_path(root).parent / "resume"
    saved = sorted(resume_dir.glob("*.pt"))
    assert len(saved) == 1
    stopped_at = torch.load(saved[0], weights_only=True)["trainer"]["iteration"]
    assert stopped_at in (6, 7) and stopped_at % 4 != 0  # killed mid-epoch (4 iterations per epoch)

    result = bundle_cli.run_bundle(BUNDLE, [TRAIN, "quick"], *args, "--resume", "true")
    iterations = [tuple(map(int, m.groups())) for m in ITER_LINE.finditer(result.stdout + result.stderr)]
    # the run goes on from the next iteration of the interrupted epoch and ends where a full run ends
    assert iterations[0] == (2, 3, stopped_at - 4 + 1, 4)
    assert iterations[-1] == (3, 3, 4, 4)
    assert len(iterations) == 12 - stopped_at
    final = torch.load(latest_checkpoint(resume_dir), weights_only=True)
    assert final["trainer"]["iteration"] == 12
    # the epoch-level schedule steps when an epoch ends, after its last iteration's state was saved: 2 steps
    # (epochs 1 and 2) when the schedule was restored, 1 if it had restarted at the resume
    assert final["lr_scheduler"]["last_epoch"] == 2
    steps = {int(state["step"]) for state in final["optimizer"]["state"].values()}
    assert steps == {12}  # Adam's step counts span both processes: the optimizer state was restored


METRIC_LINE = re.compile(r"Epoch\[(\d+)\] Metrics -- val_f1: ([0-9.]+)")


def test_resume_keeps_the_best_score(data, tmp_path):
    """After a kill and --resume true, model.pt is replaced only by a score strictly better than the best before."""
    root = tmp_path / "best"
    # learning rate 0: the scores stay flat, so the validation after the resume ties the best one
    args = train_args(data, root, "--max_epochs", "3", "--checkpoint_interval", "1", "--val_interval", "1",
                      "--learning_rate", "0")
    process = subprocess.Popen(bundle_cli.bundle_command(BUNDLE, [TRAIN, "quick"], *args), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # kill in epoch 3, after epochs 1 and 2 were validated
        if "Saved checkpoint at iteration: 9" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    best = ckpt_path(root)
    before = best.read_bytes()
    # ignite's record of the best score, stored in model.pt itself (MONAI's key_metric_save_state)
    (best_score, _), = torch.load(best, weights_only=True)["checkpointer"]["_saved"]
    result = bundle_cli.run_bundle(BUNDLE, [TRAIN, "quick"], *args, "--resume", "true")
    scores = {int(e): float(v) for e, v in METRIC_LINE.findall(result.stdout + result.stderr)}
    assert list(scores) == [3]  # only epoch 3 was validated after the resume
    assert scores[3] <= best_score, "the flat run should tie its best score"
    assert best.read_bytes() == before  # a tie does not replace the best model
