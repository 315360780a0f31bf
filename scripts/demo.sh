#!/usr/bin/env bash
# The main job: a local single-node cache cluster and an agent-like demo workload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" demo
exec "$venv/bin/omnicache-cluster" demo "$@"
