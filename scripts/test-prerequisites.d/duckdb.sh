#!/usr/bin/env bash
# The analytics store links the prebuilt libduckdb (see scripts/duckdb). The build scripts fetch it
# too; fetching it here first makes a missing npm or a failed download the first thing said.
set -euo pipefail
bash "$(dirname "$0")/../duckdb" >/dev/null
