"""MLflow for the bundles' `--tracking mlflow` runs: run parameters, the best checkpoint, and a run that
survives its tracking server.

`python -m monai.bundle run ... --tracking mlflow` appends MONAI's `MLFlowHandler` to `train#handlers` and
`validate#handlers`; it logs the loss, the learning rate, per-epoch metrics and the executed config.
`TrackingExtras`, built in each train config's `run` section before training starts, gives those
handlers what they need through their own options: the run's hyper-parameters as `experiment_param`, the
best checkpoint and the training curve (CSV, PNG) in `artifacts`. It also wraps each handler's MLflow client in a `FallbackClient`: when the
server cannot be reached, at the start or at any moment of the run, the run continues in a local store
(`fallback_uri`) with everything logged so far copied there, so training never stops for tracking and no
logged value is lost. Without `--tracking` the handler lists hold no MLFlowHandler and nothing happens.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3.0
# MLflow retries a failed request for minutes by default (7 retries, backoff factor 2, 120 s timeout);
# a bundle's run asks for a quick answer and falls back to the local store instead.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def server_reachable(tracking_uri: str, timeout: float = HEALTH_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, reason) for an http(s) tracking URI; local stores (sqlite, ...) count as reachable."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True, ""
    # `mlflow server` answers GET /health with "OK"; anything else within the timeout means no server.
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        return False, str(getattr(err, "reason", err))


def _param_value(value) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."  # MLflow limits a parameter value's length


class FallbackStore:
    """What the MLflow clients of one bundle run share: the calls logged so far and, after a switch, the
    local store with the run ids there."""

    LOGGING_CALLS = ("log_batch", "log_artifact", "log_param", "log_metric", "set_tag", "log_inputs")

    def __init__(self, fallback_uri: str, artifact_location: str | None = None):
        self.fallback_uri, self.artifact_location = fallback_uri, artifact_location
        self.journal: list[tuple[str, tuple, dict]] = []
        self.experiment_names: dict[str, str] = {}  # server experiment id -> name
        self.runs: dict[str, tuple[str, str | None]] = {}  # server run id -> (experiment id, run name)
        self.run_ids: dict[str, str] = {}  # server run id -> local run id, after the switch
        self.local = None  # the local MlflowClient, after the switch

    def remember(self, name: str, args: tuple, kwargs: dict, result) -> None:
        """Keep what a switch needs: logging calls, experiment names, runs."""
        if name in self.LOGGING_CALLS:
            self.journal.append((name, args, kwargs))
        elif name == "create_experiment":
            self.experiment_names[str(result)] = args[0] if args else kwargs["name"]
        elif name in ("get_experiment_by_name", "get_experiment") and result is not None:
            self.experiment_names[str(result.experiment_id)] = result.name
        elif name in ("create_run", "get_run") and result is not None:
            self.runs[result.info.run_id] = (str(result.info.experiment_id), result.info.run_name)

    def local_ids(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Arguments with server run ids replaced by their local twins."""
        kwargs = {k: self.run_ids.get(v, v) if k == "run_id" else v for k, v in kwargs.items()}
        return tuple(self.run_ids.get(a, a) if isinstance(a, str) else a for a in args), kwargs

    def switch(self, server_uri: str, err: Exception) -> None:
        """Continue in the local store: the same experiments and runs, with everything logged so far."""
        import mlflow

        local = mlflow.MlflowClient(tracking_uri=self.fallback_uri)
        experiments: dict[str, str] = {}
        for run_id, (experiment_id, run_name) in self.runs.items():
            name = self.experiment_names.get(experiment_id, "cellzoo_fallback")
            if name not in experiments:
                found = local.get_experiment_by_name(name)
                experiments[name] = found.experiment_id if found else local.create_experiment(
                    name, artifact_location=self.artifact_location)
            self.run_ids[run_id] = local.create_run(experiments[name], run_name=run_name).info.run_id
        for name, args, kwargs in self.journal:
            args, kwargs = self.local_ids(args, kwargs)
            getattr(local, name)(*args, **kwargs)
        self.local = local
        logger.warning("MLflow tracking server %s went away (%s); the run continues in %s, with everything "
                       "logged so far copied there", server_uri, str(err).splitlines()[0][:200], self.fallback_uri)


class FallbackClient:
    """An MlflowClient stand-in that moves the run to a local store when the server goes away.

    Every call goes to the server's client while the server answers. When a call fails and the server no
    longer passes its health check, the shared `FallbackStore` switches (once, with one warning): it
    creates the same experiment and runs in the local store, replays every parameter, metric, tag and
    artifact logged so far into them, and from then on every call goes there (the server's run ids keep
    working). A failure while the server is up is an MLflow error: a parameter changed on resume is
    warned about and skipped; others are raised.
    """

    def __init__(self, client, store: FallbackStore):
        self.client, self.store = client, store

    @property
    def tracking_uri(self) -> str:
        return self.store.fallback_uri if self.store.local is not None else self.client.tracking_uri

    def __getattr__(self, name: str):
        if not callable(getattr(self.client, name)):
            return getattr(self.client, name)

        def call(*args, **kwargs):
            if self.store.local is not None:
                args, kwargs = self.store.local_ids(args, kwargs)
                return getattr(self.store.local, name)(*args, **kwargs)
            try:
                result = getattr(self.client, name)(*args, **kwargs)
            except Exception as err:  # MLflow raises MlflowException, requests and OS errors alike
                return self._failed(name, args, kwargs, err)
            self.store.remember(name, args, kwargs, result)
            return result

        return call

    def _failed(self, name: str, args: tuple, kwargs: dict, err: Exception):
        if not server_reachable(self.client.tracking_uri)[0]:
            self.store.switch(self.client.tracking_uri, err)
            return getattr(self, name)(*args, **kwargs)
        if name == "log_batch" and "param" in str(err).lower():
            logger.warning("MLflow did not take the run parameters (%s); training continues", err)
            return None
        raise err


class TrackingExtras:
    """Prepare the MLFlowHandlers of a run before training starts (see the module docstring).

    `handlers` are the trainer's handlers (parameters and the checkpoint go to its MLflow run),
    `val_handlers` the validator's; both get the fallback. Handlers that are not MLFlowHandlers are left
    alone, so the object does nothing in runs without `--tracking mlflow`.
    """

    def __init__(self, handlers: Sequence, val_handlers: Sequence = (), fallback_uri: str = "",
                 params: Mapping | None = None, checkpoint: str | None = None, artifacts: Sequence = ()):
        from monai.handlers import MLFlowHandler

        train = [h for h in handlers if isinstance(h, MLFlowHandler)]
        self.handlers = train + [h for h in val_handlers if isinstance(h, MLFlowHandler)]
        if not self.handlers:
            return
        for key, value in QUICK_HTTP.items():
            os.environ.setdefault(key, value)
        store = FallbackStore(fallback_uri, _artifact_location(fallback_uri))
        for handler in self.handlers:
            self._guard(handler, store)
        for handler in train:
            handler.experiment_param = {**(handler.experiment_param or {}),
                                        **{str(k): _param_value(v) for k, v in (params or {}).items()}}
            extra = ([checkpoint] if checkpoint else []) + [str(path) for path in artifacts]
            handler.artifacts = (*handler.artifacts, *extra)

    @staticmethod
    def _guard(handler, store: FallbackStore) -> None:
        """Wrap a server's client; an unreachable server sends the whole run to the local store at once."""
        uri = handler.client.tracking_uri
        if not uri.startswith(("http://", "https://")):
            return  # a local store has no server to lose
        reachable, reason = server_reachable(uri)
        if reachable:
            handler.client = FallbackClient(handler.client, store)
            return
        import mlflow

        logger.warning("MLflow tracking server %s is unreachable (%s); training continues and this run is "
                       "logged to %s instead", uri, reason, store.fallback_uri)
        handler.client, handler.experiment = mlflow.MlflowClient(tracking_uri=store.fallback_uri), None
        handler.artifact_location = store.artifact_location


def _artifact_location(fallback_uri: str) -> str | None:
    """Artifacts of a SQLite store go beside the database (MONAI's own default for such a store)."""
    from monai.utils import path_to_uri

    if fallback_uri.startswith("sqlite:///"):
        return path_to_uri(Path(fallback_uri[len("sqlite:///"):]).parent / "mlruns")
    return None
