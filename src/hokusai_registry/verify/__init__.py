"""Black-box verification of a registry deployment: ordered checks, root-cause diagnoses, reports."""

from hokusai_registry.verify.checks import CheckResult, Context
from hokusai_registry.verify.diagnose import CATALOGUE, Diagnosis
from hokusai_registry.verify.recommend import Observations, Recommendation
from hokusai_registry.verify.report import Report
from hokusai_registry.verify.runner import verify

__all__ = [
    "CATALOGUE",
    "CheckResult",
    "Context",
    "Diagnosis",
    "Observations",
    "Recommendation",
    "Report",
    "verify",
]
