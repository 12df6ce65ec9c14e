"""Why a deploy stopped, as exception types: the CLI's exit code follows the type, never a step name.

A leaf module (nothing of ours imported), so every other ``deploy`` module can raise these. The tree::

    DeployError        a step failed (exit 1); .step names it (the message prefix, not the exit code),
    │                  .changed says whether the service had been pointed at the new revision
    └── DeployRefused  preflight or the plan said no: nothing was built, pushed or changed (exit 2)

A refusal is decided before the first change, so ``DeployRefused.changed`` is always False.
"""

from __future__ import annotations

from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError

AWS_ERRORS = (BotoCoreError, ClientError)


class DeployError(Exception):
    """A deploy step failed; ``step`` names it, ``changed`` says whether the service was touched."""

    def __init__(self, step: str, message: str, *, changed: bool = False) -> None:
        super().__init__(message)
        self.step, self.changed = step, changed


class DeployRefused(DeployError):
    """Preflight or plan said no: nothing was built, pushed or changed."""

    def __init__(self, step: Literal["preflight", "plan"], message: str) -> None:
        super().__init__(step, message)


# After preflight, describe_service's "service not found" is one more AWS answer, not a refusal.
LATER_ERRORS = (*AWS_ERRORS, DeployError)
