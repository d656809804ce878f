#!/usr/bin/env bash
# The store suite's postgres::* tests and tests/store/server_postgres.rs need PostgreSQL on
# 127.0.0.1:5432 (user postgres, no password over loopback): install and start it when missing.
set -euo pipefail
"$(dirname "$0")/../services" up >/dev/null
