"""Ship a new registry image: build and push (optional), plan, register, roll out, verify, roll back."""

from hokusai_registry.deploy.ecs import Deployer, DeployError, Plan, deploy
from hokusai_registry.deploy.image import BuildPlan, ImageBuilder

__all__ = ["BuildPlan", "DeployError", "Deployer", "ImageBuilder", "Plan", "deploy"]
