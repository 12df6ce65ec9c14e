"""Ship a new registry image: build and push (optional), plan, register, roll out, verify, roll back.

Layers, each importing only those above it: ``errors`` (the exception tree), ``plan`` (pure rules),
``ecs`` (boto3) and ``image`` (docker/ECR), then ``rollout`` (the order of steps, the rollback).
"""

from hokusai_registry.deploy.ecs import Deployer
from hokusai_registry.deploy.errors import DeployError, DeployRefused
from hokusai_registry.deploy.image import BuildPlan, ImageBuilder
from hokusai_registry.deploy.plan import Plan
from hokusai_registry.deploy.rollout import deploy

__all__ = ["BuildPlan", "DeployError", "DeployRefused", "Deployer", "ImageBuilder", "Plan", "deploy"]
