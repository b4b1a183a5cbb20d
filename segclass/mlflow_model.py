"""A trained model as an MLflow PyTorch model: what each finished trial's run holds under `model`.

MLflow users load it with `mlflow.pytorch.load_model("runs:/<run id>/model")`
or, once registered in the Model Registry, `models:/<name>/<version>`. What
they get is `MaskModel`: images (N x 3 x P x P, float, normalized as in
training) to mask logits at the input size, the path predict takes. The
model file's description (class names, trial config, preprocessing: what
predict needs to see a slide as the model was trained) travels in the MLmodel
file's metadata, so `segclass.predict --checkpoint models:/<name>/<version>`
rebuilds the full `TrainedModel` from it. The module is saved with pickle
(segclass must be installed where it is loaded, from its repository: it is
not a PyPI package, so it is not among the model's pip requirements): torch.export's program
would take ~10 s per trial in the driver and lose the SegClassNet inside.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from segclass.model_file import TrainedModel, export_state, from_export_state

#: The artifact name of the model in a trial's run (`runs:/<run id>/model`).
MODEL_NAME = "model"
METADATA_KEY = "segclass_model"


def log_trained_model(tracking_uri: str, run_id: str, trained: TrainedModel) -> str:
    """Log `trained` to run `run_id` as an MLflow PyTorch model with a signature and an input example;
    returns its `models:/` URI. The run is left as it was (this does not end it)."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from segclass.model import MaskModel

    module = MaskModel(trained.model).eval()
    example = np.zeros((1, 3, trained.patch_size, trained.patch_size), np.float32)
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    metadata = {key: value for key, value in export_state(trained).items() if key != "model"}
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    status = client.get_run(run_id).info.status
    # pickle is chosen (module docstring): MLflow's caution about it, once per trial, would flood the console
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    try:  # segclass itself is not a pip requirement: it is not on PyPI (a name there could be anyone's package)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                module, name=MODEL_NAME, signature=infer_signature(example, output), input_example=example,
                serialization_format="pickle", pip_requirements=[f"torch>={torch.__version__.split('+')[0]}"],
                metadata={METADATA_KEY: json.dumps(metadata, default=_plain)})
    finally:  # the `with` ended the run: it ends when its trial's record is whole
        client.update_run(run_id, status=status)
    return info.model_uri


def _plain(value: Any) -> Any:
    """JSON for what a model file's description may hold besides plain values (arrays, tensors)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def load_logged_model(uri: str, tracking_uri: str | None = None) -> TrainedModel:
    """The `TrainedModel` behind a `runs:/<run id>/model` or `models:/<name>/<version>` URI."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import get_model_info

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    metadata = (get_model_info(uri).metadata or {}).get(METADATA_KEY)
    module = mlflow.pytorch.load_model(uri, map_location="cpu")
    if metadata is None or not hasattr(module, "net"):
        from segclass.errors import CheckpointError

        raise CheckpointError(f"{uri} is an MLflow model, but not one segclass logged (no {METADATA_KEY} metadata)")
    return from_export_state({**json.loads(metadata), "model": module.net.state_dict()}, Path(uri))
