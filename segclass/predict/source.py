"""Where a trained model comes from: a file, a trial folder, an MLflow run or the Model Registry.

`--checkpoint` takes a `model.pt` / `checkpoint.pt` file, a folder holding one
(a Tune checkpoint folder), an MLflow run id, a `runs:/<run id>[/path]` URI or
a `models:/<name>/<version>` URI. A run id alone means that run's MLflow
model (`model`, which every finished sweep trial logs; `segclass.mlflow_model`),
or its `model.pt` artifact for runs of segclass versions before it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from segclass.errors import CheckpointError, SegclassError
from segclass.model_file import TrainedModel

MODEL_FILES = ("model.pt", "checkpoint.pt")
MODEL_NAME = "model"  # segclass.mlflow_model.MODEL_NAME, without importing MLflow here
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def load_trained(spec: str, tracking_uri: str | None = None, which: str = "last") -> TrainedModel:
    """The trained model `spec` names (see the module docstring); its `source` says where it came from."""
    import dataclasses

    from segclass.model_file import load_model

    run_alone = _RUN_ID.fullmatch(spec) or spec.startswith("runs:/") and "/" not in spec[len("runs:/"):].strip("/")
    if spec.startswith("models:/") or spec.startswith("runs:/") and not run_alone and not spec.endswith(".pt"):
        return _logged_model(spec, tracking_uri)
    if run_alone:
        run = spec[len("runs:/"):].strip("/") if spec.startswith("runs:/") else spec
        if _has_logged_model(run, tracking_uri):  # else a run of a segclass before MLflow models: its model.pt
            return _logged_model(f"runs:/{run}/{MODEL_NAME}", tracking_uri)
    with checkpoint_file(spec, tracking_uri) as (path, origin):
        try:
            return dataclasses.replace(load_model(path, which), source=origin)
        except SegclassError as exc:  # name the model the user gave, not a download about to be removed
            raise type(exc)(str(exc).replace(str(path), origin)) from exc


def _has_logged_model(run_id: str, tracking_uri: str | None) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return bool(MlflowClient(_tracking_uri(tracking_uri)).get_run(run_id).outputs.model_outputs)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # the model.pt download reports it, with the fix
            return False
        store = _without_credentials(_tracking_uri(tracking_uri))
        raise CheckpointError(f"cannot read MLflow run {run_id} from {store}: {str(exc).splitlines()[0]}; check "
                              "--tracking-uri") from exc


def _logged_model(uri: str, tracking_uri: str | None) -> TrainedModel:
    import dataclasses

    from segclass.mlflow_model import load_logged_model

    tracking_uri = _tracking_uri(tracking_uri)
    try:
        trained = load_logged_model(uri, tracking_uri)
    except CheckpointError:
        raise
    except Exception as exc:  # MLflow raises several unrelated types for a missing run, model or version
        raise CheckpointError(f"cannot load the MLflow model {uri} from {_without_credentials(tracking_uri)}: "
                              f"{exc}; check the run id or model name and version (MLflow UI) and "
                              "--tracking-uri") from exc
    return dataclasses.replace(trained, source=f"{uri} in {_without_credentials(tracking_uri)}")


def _tracking_uri(given: str | None) -> str:
    from segclass.schema import default_tracking_uri

    return given or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path("results"))


@contextmanager
def checkpoint_file(spec: str, tracking_uri: str | None = None) -> Iterator[tuple[Path, str]]:
    """(a local file holding the model that `spec` names, where it came from), for the `with` block.

    An MLflow artifact is downloaded into a temporary folder that is removed
    when the block ends (load the model inside it); its origin reads
    `runs:/<run id>/model.pt in <tracking URI>`, which predictions record.
    """
    path = Path(spec)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                yield path / name, str(path / name)
                return
        raise CheckpointError(f"folder {path} holds neither {' nor '.join(MODEL_FILES)}")
    if path.is_file():
        yield path, str(path)
        return
    if spec.startswith("runs:/") or _RUN_ID.fullmatch(spec):
        folder = tempfile.mkdtemp(prefix="segclass-model-")
        try:
            yield _download(spec if spec.startswith("runs:/") else f"runs:/{spec}", tracking_uri, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    raise CheckpointError(
        f"--checkpoint {spec} is neither a file, a folder, an MLflow run id nor a runs:/ or models:/ URI; pass the "
        "trial's model.pt or checkpoint.pt, or the run id shown in the MLflow UI"
    )


def _download(uri: str, tracking_uri: str | None, folder: str) -> tuple[Path, str]:
    import mlflow
    from mlflow.artifacts import download_artifacts

    run_and_path = uri[len("runs:/"):].strip("/")
    if "/" not in run_and_path:  # a run alone: its model.pt
        uri = f"runs:/{run_and_path}/{MODEL_FILES[0]}"
    tracking_uri = _tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=folder))
    except Exception as exc:  # MLflow raises several unrelated types for a missing run or artifact
        raise CheckpointError(
            f"cannot fetch {uri} from the MLflow store {tracking_uri}: {exc}; check the run id (MLflow UI) and "
            "--tracking-uri; runs logged before model.pt existed need --checkpoint <trial folder>/checkpoint.pt"
        ) from exc
    return local, f"{uri} in {_without_credentials(tracking_uri)}"


def _without_credentials(uri: str) -> str:
    """The tracking URI as predictions record it: `scheme://user:password@host` loses `user:password@`."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", uri)

