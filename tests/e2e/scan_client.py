"""A third party registering models with the stock MLflow client, for the scanning tests.

Run as ``python scan_client.py ACTION NAME`` with MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN set;
prints one JSON line. Nothing here loads the malicious model: it is only pickled, by the client, the
way any ``mlflow.pyfunc.log_model`` call pickles a PythonModel.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LinearRegression


class Payload:
    """Pickles as a call to os.system, which runs when (and only if) someone unpickles it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo this model ran code on load",)


class Innocent(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def __init__(self) -> None:
        self.payload = Payload()

    def predict(self, context: object, model_input: object) -> object:
        return model_input


def register_malicious(name: str) -> dict[str, object]:
    mlflow.set_experiment(f"{name}-experiment")
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=Innocent(), registered_model_name=name)
    except MlflowException as error:
        return {"raised": True, "message": error.message}
    return {"raised": False, "model_uri": info.model_uri}


def register_benign(name: str) -> dict[str, object]:
    features = np.arange(20, dtype=float).reshape(10, 2)
    model = LinearRegression().fit(features, features @ np.array([1.0, 2.0]))
    mlflow.set_experiment(f"{name}-experiment")
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, serialization_format="cloudpickle"
        )
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    return {"same": bool(np.allclose(loaded.predict(features), model.predict(features)))}


def download(name: str) -> dict[str, object]:
    """Try every way the stock client fetches a version: by number, by alias, by loading it."""
    outcomes: dict[str, object] = {}
    for uri in (f"models:/{name}/1", f"models:/{name}@champion"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                mlflow.artifacts.download_artifacts(uri, dst_path=tmp)
                outcomes[uri] = "downloaded"
            except Exception as error:  # the stock client raises MlflowException or an HTTP error
                outcomes[uri] = f"{type(error).__name__}: {error}"
    return outcomes


if __name__ == "__main__":
    action, model_name = sys.argv[1], sys.argv[2]
    result = {"malicious": register_malicious, "benign": register_benign, "download": download}[action](
        model_name
    )
    print(json.dumps(result))
