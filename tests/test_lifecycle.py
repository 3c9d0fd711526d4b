"""Bundle lifecycle on the CPU: MLflow tracking (real server and unreachable server), two-process DDP
training, resuming after a kill mid-epoch, and TorchScript export. Every bundle with a train config runs
through the same tests (quick configs, a few iterations)."""

from __future__ import annotations

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
from cellzoo.bundles import bundle_path, list_bundles
from cellzoo.engines.checkpoints import latest_checkpoint, read_state_dict
from cellzoo.synthetic import synthesize

# Per bundle: the synthetic data its train config reads, the train config, overrides that make one epoch
# 4 iterations, its MLflow experiment and key metric, and whether export must trace (no torch.jit.script).
TRAINABLE = {
    "mediar_cellseg": {"layout": "cellseg", "size": (128, 128), "n": 6, "train": "train",
                       "short": ["--samples_per_epoch", "16", "--batch_size", "4", "--n_folds", "3"],
                       "experiment": "mediar_cellseg_train", "key_metric": "val_f1", "trace": True},
    "isl_segmentation": {"layout": "isl", "size": (96, 96), "n": 6, "train": "train_nuclei",
                         "short": ["--samples_per_epoch", "16", "--batch_size", "4", "--n_folds", "3"],
                         "experiment": "isl_segmentation_nuclei", "key_metric": "val_iou", "trace": False},
}
BUNDLES = [b["name"] for b in list_bundles() if b["name"] in TRAINABLE]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=BUNDLES)
def bundle(request, tmp_path_factory) -> dict:
    """A bundle name, its synthetic training data and its short-run overrides."""
    spec = TRAINABLE[request.param]
    root = tmp_path_factory.mktemp(request.param)
    data = synthesize(spec["layout"], spec["n"], root / "data", seed=3, size=spec["size"])
    return {"name": request.param, "data": data, **spec}


def config_value(bundle: dict, root: Path, key: str):
    """The value of `key` in the bundle's train config with bundle_root `root`."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_path(bundle["name"]) / "configs" / f"{bundle['train']}.yaml"))
    parser["bundle_root"] = str(root)
    return parser.get_parsed_content(key)


def run_outputs(bundle: dict, root: Path, what: str) -> Path:
    """Where the bundle's train config puts `what` ("output_dir" or "ckpt_dir") under bundle_root `root`."""
    return Path(config_value(bundle, root, what))


def ckpt_path(bundle: dict, root: Path) -> Path:
    return run_outputs(bundle, root, "ckpt_dir") / "model.pt"


def mlflow_db(bundle: dict, root: Path) -> Path:
    return run_outputs(bundle, root, "output_dir") / "mlruns.db"


def train_args(bundle: dict, root: Path, *extra: str) -> list[str]:
    return ["--bundle_root", str(root), "--dataset_dir", str(bundle["data"]), *bundle["short"], *extra]


# ---------------------------------------------------------------- MLflow

@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend store; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow_server")
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
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and every worker it started
        server.wait(timeout=30)
        log.close()


def read_run(tracking_uri: str, experiment: str):
    """The single run of `experiment` as (client, run)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def check_tracked_run(client, run, checkpoint: Path, tmp_path: Path, max_epochs: int, key_metric: str) -> None:
    """Parameters, per-epoch metrics, the executed config and the best checkpoint are all in the run."""
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == str(max_epochs)
    assert float(run.data.params["learning_rate"]) > 0
    history = client.get_metric_history(run.info.run_id, key_metric)
    assert [m.step for m in history] == list(range(1, max_epochs + 1))
    assert all(0.0 <= m.value <= 1.0 for m in history)
    assert client.get_metric_history(run.info.run_id, "train_loss")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(re.fullmatch(r"config_\d{8}_\d{6}\.json", a) for a in artifacts), artifacts
    local = client.download_artifacts(run.info.run_id, "checkpoints/model.pt", str(tmp_path))
    assert Path(local).read_bytes() == checkpoint.read_bytes()


def test_mlflow_tracking_over_http(bundle, mlflow_server, tmp_path):
    root, experiment = tmp_path / "run", f"http_{bundle['name']}"  # one server serves every bundle's test
    bundle_cli.run_bundle(bundle["name"], [bundle["train"], "quick"], *train_args(bundle, root, "--max_epochs", "2"),
                          "--tracking", "mlflow", "--tracking_uri", mlflow_server, "--experiment_name", experiment)
    client, run = read_run(mlflow_server, experiment)
    check_tracked_run(client, run, ckpt_path(bundle, root), tmp_path, max_epochs=2, key_metric=bundle["key_metric"])


def test_mlflow_unreachable_server_falls_back_to_local_store(bundle, tmp_path):
    """Nothing listens at the tracking URI: training warns and logs the run to the default local store."""
    root = tmp_path / "run"
    dead = f"http://127.0.0.1:{free_port()}"
    result = bundle_cli.run_bundle(bundle["name"], [bundle["train"], "quick"], *train_args(bundle, root, "--max_epochs", "1"),
                                   "--tracking", "mlflow", "--tracking_uri", dead, "--experiment_name", "offline")
    log = result.stdout + result.stderr
    assert f"MLflow tracking server {dead} is unreachable" in log
    # the fallback is the default store of `--tracking mlflow` without --tracking_uri: <output_dir>/mlruns.db
    local = mlflow_db(bundle, root)
    assert config_value(bundle, root, "tracking_uri") == f"sqlite:///{local}"
    client, run = read_run(f"sqlite:///{local}", "offline")
    check_tracked_run(client, run, ckpt_path(bundle, root), tmp_path, max_epochs=1, key_metric=bundle["key_metric"])


# ---------------------------------------------------------------- multi-GPU (DDP on the CPU)

def test_two_process_ddp_trains_identical_weights(bundle, tmp_path):
    root = tmp_path / "ddp"
    save_ranks = tmp_path / "save_ranks.yaml"
    # appended to finalize: each process saves the weights it ends with
    save_ranks.write_text('+finalize:\n  - "$torch.save(@network.module.state_dict(), '
                          "@output_dir + '/rank%d.pt' % @local_rank)\"\n")
    bundle_cli.run_bundle(bundle["name"], [bundle["train"], "quick", "multi_gpu_train", str(save_ranks)],
                          *train_args(bundle, root, "--max_epochs", "2"), launcher=bundle_cli.torchrun(2))
    out = run_outputs(bundle, root, "output_dir")
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # rank 0 saved the best model without DDP's "module." prefix, and training moved the weights
    best = read_state_dict(ckpt_path(bundle, root))
    assert best.keys() == rank0.keys()
    torch.manual_seed(0)
    start = quick_network(bundle).state_dict()
    assert any(not torch.equal(start[k], rank0[k]) for k in rank0 if rank0[k].is_floating_point())


def quick_network(bundle: dict) -> torch.nn.Module:
    """The quick network of a bundle's train config, freshly built (untrained)."""
    from monai.bundle import ConfigParser

    folder = bundle_path(bundle["name"]) / "configs"
    parser = ConfigParser()
    parser.read_config([str(folder / f"{bundle['train']}.yaml"), str(folder / "quick.yaml")])
    return parser.get_parsed_content("network_def")


# ---------------------------------------------------------------- resume after a kill mid-epoch

ITER_LINE = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- train_loss")


def test_resume_after_kill_mid_epoch(bundle, tmp_path):
    root = tmp_path / "resume"
    args = train_args(bundle, root, "--max_epochs", "3", "--checkpoint_interval", "1", "--val_interval", "3")
    command = bundle_cli.bundle_command(bundle["name"], [bundle["train"], "quick"], *args)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # kill as soon as the state after iteration 6 (epoch 2, iteration 2/4) is saved
        if "Saved checkpoint at iteration: 6" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    resume_dir = ckpt_path(bundle, root).parent / "resume"
    saved = sorted(resume_dir.glob("*.pt"))
    assert len(saved) == 1
    stopped_at = read_state_dict(saved[0], key="trainer")["iteration"]
    assert stopped_at in (6, 7) and stopped_at % 4 != 0  # killed mid-epoch (4 iterations per epoch)

    result = bundle_cli.run_bundle(bundle["name"], [bundle["train"], "quick"], *args, "--resume", "true")
    iterations = [tuple(map(int, m.groups())) for m in ITER_LINE.finditer(result.stdout + result.stderr)]
    # the run goes on from the next iteration of the interrupted epoch and ends where a full run ends
    assert iterations[0] == (2, 3, stopped_at - 4 + 1, 4)
    assert iterations[-1] == (3, 3, 4, 4)
    assert len(iterations) == 12 - stopped_at
    final = torch.load(latest_checkpoint(resume_dir), weights_only=True)
    assert final["trainer"]["iteration"] == 12
    # the epoch-level schedule steps when an epoch ends, after its last iteration's state was saved: 2 steps
    # (epochs 1 and 2) when the schedule was restored, 1 if it had restarted at the resume
    if "lr_scheduler" in final:  # bundles with a learning-rate schedule
        assert final["lr_scheduler"]["last_epoch"] == 2
    steps = {int(state["step"]) for state in final["optimizer"]["state"].values()}
    assert steps == {12}  # Adam's step counts span both processes: the optimizer state was restored


# ---------------------------------------------------------------- export

def test_torchscript_export_matches_eager(bundle, tmp_path):
    """ckpt_export gives the eager network's output (traced where the network does not script)."""
    folder = bundle_path(bundle["name"]) / "configs"
    network = quick_network(bundle).eval()
    ckpt = tmp_path / "model.pt"
    torch.save({"model": network.state_dict()}, ckpt)
    exported = tmp_path / "model.ts"
    roi = 64
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "--net_id", "network_def", "--filepath", str(exported),
         "--ckpt_file", str(ckpt), "--key_in_ckpt", "model", "--meta_file", str(folder / "metadata.json"),
         "--config_file", repr([str(folder / "inference.yaml"), str(folder / "quick.yaml")]),
         *(["--use_trace", "True", "--input_shape", f"[1, 3, {roi}, {roi}]"] if bundle["trace"] else [])],
        check=True, capture_output=True)
    scripted = torch.jit.load(str(exported))
    x = torch.rand(2, 3, roi, roi, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(scripted(x), network(x), atol=1e-4)
