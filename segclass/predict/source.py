"""Where a trained model comes from: a file, a trial folder, or an MLflow run.

`--checkpoint` takes a `model.pt` / `checkpoint.pt` file, a folder holding one
(a Tune checkpoint folder), an MLflow run id, or a `runs:/<run id>[/path]` URI.
A run id alone means that run's `model.pt` artifact, which every finished
sweep trial logs.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from segclass.errors import CheckpointError

MODEL_FILES = ("model.pt", "checkpoint.pt")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_checkpoint(spec: str, tracking_uri: str | None = None) -> Path:
    """A local file holding the model that `spec` names (MLflow artifacts are downloaded)."""
    path = Path(spec)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"folder {path} holds neither {' nor '.join(MODEL_FILES)}")
    if path.is_file():
        return path
    if spec.startswith("runs:/") or _RUN_ID.fullmatch(spec):
        return _download(spec if spec.startswith("runs:/") else f"runs:/{spec}", tracking_uri)
    raise CheckpointError(
        f"checkpoint {spec} is neither a file, a folder, an MLflow run id nor a runs:/ URI; pass the trial's "
        "model.pt or checkpoint.pt, or the run id shown in the MLflow UI"
    )


def _download(uri: str, tracking_uri: str | None) -> Path:
    import mlflow
    from mlflow.artifacts import download_artifacts

    from segclass.schema import default_tracking_uri

    run_and_path = uri[len("runs:/"):].strip("/")
    if "/" not in run_and_path:  # a run alone: its model.pt
        uri = f"runs:/{run_and_path}/{MODEL_FILES[0]}"
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path("results"))
    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp(prefix="segclass-model-")))
    except Exception as exc:  # MLflow raises several unrelated types for a missing run or artifact
        raise CheckpointError(
            f"cannot fetch {uri} from the MLflow store {tracking_uri}: {exc}; check the run id (MLflow UI) and "
            "--tracking-uri; runs logged before model.pt existed need --checkpoint <trial folder>/checkpoint.pt"
        ) from exc
    return local

