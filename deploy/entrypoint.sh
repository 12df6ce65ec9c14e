#!/bin/sh
# The container's entrypoint, and the same command on a plain host (tests/e2e/test_container_entrypoint.py
# runs it directly against PostgreSQL and an S3 emulator, then runs `verify` against it).
#
# Refuses to start (exit 2, one line per missing variable) without a backend store, an artifact
# destination and the three secrets; a container must not fall back to SQLite, local artifacts or
# secrets generated into an ephemeral data dir. Secret values are never printed.
# Then it becomes `hokusai-registry up` (artifact serving is always on there); extra arguments are
# passed to `up`. SIGTERM goes straight to the server, which stops its workers.
set -eu

missing=0
for name in \
    HOKUSAI_REGISTRY_BACKEND_STORE_URI \
    HOKUSAI_REGISTRY_ARTIFACTS_DESTINATION \
    HOKUSAI_REGISTRY_FLASK_SECRET_KEY \
    HOKUSAI_REGISTRY_ADMIN_PASSWORD \
    HOKUSAI_REGISTRY_KEY_HASH_SECRET; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "hokusai-registry entrypoint: $name is not set (required)" >&2
        missing=1
    fi
done
unset value
if [ "$missing" -ne 0 ]; then
    echo "hokusai-registry entrypoint: refusing to start; set the variables above" >&2
    exit 2
fi

# Listen on all interfaces (the load balancer / port mapping reaches the container from outside).
HOKUSAI_REGISTRY_HOST="${HOKUSAI_REGISTRY_HOST:-0.0.0.0}"
# Holds auth.ini (it may contain the database password, mode 0600); nothing persistent lives here
# since the backend store, the artifacts and the secrets are all external.
HOKUSAI_REGISTRY_DATA_DIR="${HOKUSAI_REGISTRY_DATA_DIR:-${TMPDIR:-/tmp}/hokusai-registry}"
# No key is printed: stdout is a log (CloudWatch) and keys are never logged. Create the first one
# with `hokusai-registry keys create --user admin --scope admin` (ECS Exec into the task, or any host
# with the same database URI and secrets).
HOKUSAI_REGISTRY_FIRST_ADMIN_KEY="${HOKUSAI_REGISTRY_FIRST_ADMIN_KEY:-false}"
export HOKUSAI_REGISTRY_HOST HOKUSAI_REGISTRY_DATA_DIR HOKUSAI_REGISTRY_FIRST_ADMIN_KEY

if ! mkdir -p "$HOKUSAI_REGISTRY_DATA_DIR" 2>/dev/null || ! [ -w "$HOKUSAI_REGISTRY_DATA_DIR" ]; then
    echo "hokusai-registry entrypoint: HOKUSAI_REGISTRY_DATA_DIR=$HOKUSAI_REGISTRY_DATA_DIR is not writable" >&2
    exit 2
fi

exec hokusai-registry up "$@"
