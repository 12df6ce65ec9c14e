#!/usr/bin/env bash
# Runbook step 1, "deploy the updated registry container": `hokusai-registry deploy ecs`, which registers a
# new task-definition revision with IMAGE (or, with --build, the image it builds from this checkout for
# linux/amd64 and pushes to ECR), waits for the rollout, verifies MLFLOW_TRACKING_URI when set, and rolls
# back when the rollout or verify fails. Extra arguments are passed through (e.g. --build, --dry-run).
#   ECS_CLUSTER=registry ECS_SERVICE=registry IMAGE=123.dkr.ecr.us-east-1.amazonaws.com/registry:abc123 \
#   MLFLOW_TRACKING_URI=https://registry.example.com HOKUSAI_API_KEY=hk_live_... \
#     scripts/deploy_mlflow_container.sh
#   ECS_CLUSTER=registry ECS_SERVICE=registry scripts/deploy_mlflow_container.sh --build
# Exit 0: deployed; 1: a step after preflight failed (rolled back when the service had moved); 2: usage,
# preflight or plan refused, nothing changed.
set -euo pipefail
if [[ -z "${ECS_CLUSTER:-}" || -z "${ECS_SERVICE:-}" ]]; then
    echo "set ECS_CLUSTER and ECS_SERVICE (and IMAGE, or pass --build)" >&2
    exit 2
fi
args=(--cluster "$ECS_CLUSTER" --service "$ECS_SERVICE")
if [[ -n "${IMAGE:-}" ]]; then
    args+=(--image "$IMAGE")
fi
if [[ -n "${MLFLOW_TRACKING_URI:-}" ]]; then
    args+=(--url "$MLFLOW_TRACKING_URI")
fi
exec hokusai-registry deploy ecs "${args[@]}" "$@"
