"""hokusai-registry: an authenticated MLflow model registry with proxied artifact storage."""

from importlib.metadata import PackageNotFoundError, version

from hokusai_registry.register import Registration, register_model

try:
    __version__ = version("hokusai-registry")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["Registration", "__version__", "register_model"]
