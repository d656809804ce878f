#!/usr/bin/env bash
# tests/faults (bad input) runs schemathesis from PyPI against the served OpenAPI document. It goes
# into the same venv as the gRPC test's grpcio (grpc.sh creates it). Idempotent and quiet.
set -euo pipefail
VENV="${REPDIST_PYENV:-$HOME/.cache/repdist-tools/pyenv}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.'; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --timeout 60 'schemathesis>=4.32,<5'
fi
