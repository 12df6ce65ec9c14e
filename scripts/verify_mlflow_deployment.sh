#!/usr/bin/env bash
# Runbook step 2, "verify the deployment": the full `hokusai-registry verify`, reading the URL and key
# from the environment like the MLflow client does. Extra arguments are passed through, e.g.
#   MLFLOW_TRACKING_URI=https://registry.example.com HOKUSAI_API_KEY=hk_live_... \
#     scripts/verify_mlflow_deployment.sh --json report.json --markdown report.md
# Exit 0: every check passed; 1: a check failed (see the diagnosis); 2: no URL or no key.
set -euo pipefail
HOKUSAI_API_KEY="${HOKUSAI_API_KEY:-${MLFLOW_TRACKING_TOKEN:-}}"
if [[ -z "${MLFLOW_TRACKING_URI:-}" || -z "$HOKUSAI_API_KEY" ]]; then
    echo "set MLFLOW_TRACKING_URI and HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN)" >&2
    exit 2
fi
export HOKUSAI_API_KEY
exec hokusai-registry verify --url "$MLFLOW_TRACKING_URI" "$@"
