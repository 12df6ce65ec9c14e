"""hokusai-registry: an authenticated MLflow model registry with proxied artifact storage."""

__version__ = "0.1.0"
