"""MLflow extras for the bundles' `--tracking mlflow` runs: hyper-parameters, the best checkpoint, and a
local fallback when the tracking server cannot be reached.

`python -m monai.bundle run ... --tracking mlflow` appends MONAI's `MLFlowHandler` to `train#handlers` and
`validate#handlers`; it logs the loss, per-epoch metrics and the executed config. `TrackingExtras`, listed
earlier in the same handler lists, adds what MONAI's handler does not: the run's hyper-parameters and the
best checkpoint as an artifact, and it keeps training alive when the server is down by pointing the
handlers at a local SQLite store (warned about, so nothing is lost). Without `--tracking` it does nothing.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0


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


def mlflow_handlers(engine: Engine) -> Iterator:
    """The MONAI MLFlowHandler objects attached to `engine`."""
    from monai.handlers import MLFlowHandler

    # ignite has no public listing of an engine's handlers; MLFlowHandler registers its bound `start`
    # method for STARTED, so the handler objects are the owners of those methods.
    seen = set()
    for handler, *_ in engine._event_handlers.get(Events.STARTED, []):
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, MLFlowHandler) and id(owner) not in seen:
            seen.add(id(owner))
            yield owner


def redirect_to_local_store(handler, fallback_uri: str) -> None:
    """Point an MLFlowHandler (not yet started) at a local tracking store."""
    import mlflow
    from monai.utils import path_to_uri

    handler.client = mlflow.MlflowClient(tracking_uri=fallback_uri)
    handler.experiment = None
    if fallback_uri.startswith("sqlite:///"):
        handler.artifact_location = path_to_uri(Path(fallback_uri[len("sqlite:///"):]).parent / "mlruns")


def _param_value(value) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."  # MLflow limits a parameter value's length


class TrackingExtras:
    """Ignite handler: server check with local fallback, run parameters, best checkpoint as an artifact.

    List it in a handler list *before* the MLFlowHandler that `--tracking mlflow` appends, so its STARTED
    check runs before MLflow contacts the server and its COMPLETED upload runs before the run is closed.
    """

    def __init__(self, fallback_uri: str, params: Mapping | None = None, checkpoint: str | None = None):
        self.fallback_uri = fallback_uri
        self.params = dict(params or {})
        self.checkpoint = checkpoint
        self._params_logged = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.check_server)
        engine.add_event_handler(Events.EPOCH_STARTED, self.log_params)
        engine.add_event_handler(Events.COMPLETED, self.log_checkpoint)

    def check_server(self, engine: Engine) -> None:
        for handler in mlflow_handlers(engine):
            uri = handler.client.tracking_uri
            reachable, reason = server_reachable(uri)
            if not reachable:
                logger.warning(
                    "MLflow tracking server %s is unreachable (%s); training continues and this run is "
                    "logged to %s instead", uri, reason, self.fallback_uri)
                redirect_to_local_store(handler, self.fallback_uri)

    def log_params(self, engine: Engine) -> None:
        """Log the run's hyper-parameters once, after MLFlowHandler opened the run at STARTED."""
        if self._params_logged or not self.params:
            return
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        params = [Param(str(k), _param_value(v)) for k, v in self.params.items()]
        for handler in mlflow_handlers(engine):
            if handler.cur_run is None:
                continue
            try:
                handler.client.log_batch(handler.cur_run.info.run_id, params=params)
            except MlflowException as err:  # e.g. a resumed run whose parameters were changed: keep training
                logger.warning("MLflow did not take the run parameters: %s", err)
        self._params_logged = True

    def log_checkpoint(self, engine: Engine) -> None:
        if not self.checkpoint or not os.path.isfile(self.checkpoint):
            return
        for handler in mlflow_handlers(engine):
            if handler.cur_run is not None:
                handler.client.log_artifact(handler.cur_run.info.run_id, self.checkpoint, artifact_path="checkpoints")
                logger.info("logged %s to MLflow run %s", self.checkpoint, handler.cur_run.info.run_id)
