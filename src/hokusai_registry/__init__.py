"""hokusai-registry: an authenticated MLflow model registry with proxied artifact storage."""

from hokusai_registry.register import Registration, register_model

__version__ = "0.1.0"
__all__ = ["Registration", "__version__", "register_model"]
