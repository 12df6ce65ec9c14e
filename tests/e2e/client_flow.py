"""A third party's whole flow with the stock MLflow client, configured only by environment variables.

Run as a script with MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN set; prints a JSON summary.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression


def main(name: str) -> None:
    features = np.arange(40, dtype=float).reshape(20, 2)
    target = features @ np.array([1.5, -2.0]) + 3.0
    model = LinearRegression().fit(features, target)

    experiment_id = mlflow.set_experiment(f"{name}-experiment").experiment_id
    with mlflow.start_run() as run:
        mlflow.log_params({"fit_intercept": True, "rows": 20})
        mlflow.log_metrics({"r2": model.score(features, target), "rmse": 0.0})
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features)),
            registered_model_name=name,
        )
    client = MlflowClient()
    version = client.get_model_version(name, "1")
    listed = [entry.path for entry in client.list_artifacts(run.info.run_id)]
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=tmp)
        files = sorted(p.name for p in Path(downloaded).rglob("*") if p.is_file())
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    same = bool(np.allclose(loaded.predict(features), model.predict(features)))
    run_data = client.get_run(run.info.run_id).data
    print(
        json.dumps(
            {
                "experiment_id": experiment_id,
                "artifact_location": mlflow.get_experiment(experiment_id).artifact_location,
                "run_id": run.info.run_id,
                "version": version.version,
                "params": run_data.params,
                "metrics": run_data.metrics,
                "run_artifacts": listed,
                "model_files": files,
                "same_predictions": same,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
