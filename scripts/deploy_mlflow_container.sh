#!/usr/bin/env bash
# Runbook step 1, "deploy the updated registry container": `hokusai-registry deploy ecs`, which registers a
# new task-definition revision with IMAGE, waits for the rollout, verifies MLFLOW_TRACKING_URI when set, and
# rolls back when the rollout or verify fails. Extra arguments are passed through (e.g. --dry-run).
#   ECS_CLUSTER=registry ECS_SERVICE=registry IMAGE=123.dkr.ecr.us-east-1.amazonaws.com/registry:abc123 \
#   MLFLOW_TRACKING_URI=https://registry.example.com HOKUSAI_API_KEY=hk_live_... \
#     scripts/deploy_mlflow_container.sh
# Exit 0: deployed; 1: rollout or verify failed (rolled back); 2: preflight/plan refused, nothing changed.
set -euo pipefail
if [[ -z "${ECS_CLUSTER:-}" || -z "${ECS_SERVICE:-}" || -z "${IMAGE:-}" ]]; then
    echo "set ECS_CLUSTER, ECS_SERVICE and IMAGE" >&2
    exit 2
fi
args=(--cluster "$ECS_CLUSTER" --service "$ECS_SERVICE" --image "$IMAGE")
if [[ -n "${MLFLOW_TRACKING_URI:-}" ]]; then
    args+=(--url "$MLFLOW_TRACKING_URI")
fi
exec hokusai-registry deploy ecs "${args[@]}" "$@"
