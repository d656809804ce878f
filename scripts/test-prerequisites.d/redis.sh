#!/usr/bin/env bash
# The cache suite (tests/cache/) needs Redis on 127.0.0.1:6379 (or REPDIST_TEST_REDIS_URL): install
# (Debian's redis-server) and start it when missing. scripts/services is idempotent.
set -euo pipefail
"$(dirname "$0")/../services" up >/dev/null
