#!/usr/bin/env bash
# Runbook step 2, "verify the deployment": the full `hokusai-registry verify`, which reads the URL from
# MLFLOW_TRACKING_URI and the key from HOKUSAI_API_KEY (else MLFLOW_TRACKING_TOKEN), like the MLflow client.
# Extra arguments are passed through, e.g.
#   MLFLOW_TRACKING_URI=https://registry.example.com HOKUSAI_API_KEY=hk_live_... \
#     scripts/verify_mlflow_deployment.sh --json report.json --markdown report.md
# Exit 0: every check passed; 1: a check failed (see the diagnosis); 2: no URL or no key.
set -euo pipefail
exec hokusai-registry verify "$@"
