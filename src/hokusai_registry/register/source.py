"""The model a caller passes, as an MLflow model directory: a path is checked, a live object is saved.

Saving a live object first means one upload path for both kinds of input, and the files hashed are the
files sent. MLflow is imported only for live objects, so registering a directory stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hokusai_registry.register import metadata
from hokusai_registry.register.errors import InvalidInput


def flavor(model: Any) -> str:
    """``"dir"``, ``"sklearn"`` or ``"pyfunc"``; anything else is refused before any request."""
    if isinstance(model, str | Path):
        metadata.model_dir(model)
        return "dir"
    if any(cls.__module__.split(".")[0] == "sklearn" for cls in type(model).__mro__):
        return "sklearn"
    from mlflow.pyfunc import PythonModel

    if isinstance(model, PythonModel):
        return "pyfunc"
    raise InvalidInput(
        "model",
        f"a {type(model).__name__} cannot be registered: pass an MLflow model directory (with an MLmodel "
        "file), a scikit-learn estimator or an mlflow.pyfunc.PythonModel",
    )


def as_directory(model: Any, kind: str, scratch: Path) -> Path:
    """The directory to upload; live objects are saved under ``scratch`` with MLflow's own writer."""
    if kind == "dir":
        return Path(model)
    target = scratch / "model"
    try:
        if kind == "sklearn":
            import mlflow.sklearn

            mlflow.sklearn.save_model(model, str(target))
        else:
            import mlflow.pyfunc

            mlflow.pyfunc.save_model(str(target), python_model=model)
    except Exception as exc:  # MLflow raises many kinds here; all mean "this object cannot be saved"
        raise InvalidInput("model", f"MLflow could not save the {kind} model: {exc}") from exc
    return target
