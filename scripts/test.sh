#!/usr/bin/env bash
# The whole test suite, on a real local Ray, real redis-server, real FAISS and Qdrant
# local mode. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh" test
# A real Prometheus server for the shipped scrape config's test (found or fetched).
source "$(dirname "${BASH_SOURCE[0]}")/_prometheus.sh"
# Throwaway local test cluster: no Ray token auth (production keeps Ray's default).
export RAY_AUTH_MODE=disabled
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
