"""Ship a new registry image: plan, register, roll out, verify, and roll back when anything fails."""

from hokusai_registry.deploy.ecs import Deployer, DeployError, Plan, deploy

__all__ = ["DeployError", "Deployer", "Plan", "deploy"]
