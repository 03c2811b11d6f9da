#!/usr/bin/env bash
# `make sam-local`: the sam local checks (tests/sam_local) in Docker, from any machine state:
# venvs, a Docker engine (started here and stopped again at the end if none ran), the Lambda
# Python base images (pulled or built offline), then pytest (sam build, sam local invoke of every
# function with each of its events, sam local start-api). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
started_at=$SECONDS
scripts/bootstrap.sh >/dev/null
scripts/bootstrap.sh sam >/dev/null

engine_was_running=""
scripts/docker/engine.sh status >/dev/null 2>&1 && engine_was_running=1
# In an assignment a failed start stops this script (`eval "$(...)"` would eval nothing and go on).
engine_env=$(scripts/docker/engine.sh start)
eval "$engine_env"
if [[ -z $engine_was_running ]]; then trap 'scripts/docker/engine.sh stop' EXIT; fi
echo "sam-local: engine ready after $(( SECONDS - started_at )) s" >&2

scripts/docker/base-image.sh
echo "sam-local: base images ready after $(( SECONDS - started_at )) s" >&2

status=0
.venv/bin/python -m pytest -q tests/sam_local "$@" || status=$?
# Each run's sam build tags the function images anew: the builds before stay behind untagged
# (about 0.9 GB a day of runs under .state/docker). Only in the project's own engine (another
# engine's untagged images are not ours); tagged images (the base images) are kept.
if [[ ${DOCKER_HOST:-} == *"/.state/docker/"* ]]; then
  docker image prune -f >/dev/null || echo "sam-local: could not prune untagged images" >&2
fi
echo "sam-local: done in $(( SECONDS - started_at )) s (pytest exit $status)" >&2
exit $status
