"""Third-party registration of tokenized models: validate, upload, register, prove the round trip."""

from hokusai_registry.register.errors import (
    ArtifactServingDisabled,
    InvalidInput,
    KeyServiceUnavailable,
    ModelRejected,
    NotAuthenticated,
    PayloadTooLarge,
    PermissionDenied,
    RegistrationError,
    RoundTripMismatch,
    ScanTimedOut,
    ServerRefused,
    ServerUnavailable,
)
from hokusai_registry.register.files import FileRecord
from hokusai_registry.register.registration import Registration, register_model
from hokusai_registry.register.retry import RetryPolicy

__all__ = [
    "ArtifactServingDisabled",
    "FileRecord",
    "InvalidInput",
    "KeyServiceUnavailable",
    "ModelRejected",
    "NotAuthenticated",
    "PayloadTooLarge",
    "PermissionDenied",
    "Registration",
    "RegistrationError",
    "RetryPolicy",
    "RoundTripMismatch",
    "ScanTimedOut",
    "ServerRefused",
    "ServerUnavailable",
    "register_model",
]
