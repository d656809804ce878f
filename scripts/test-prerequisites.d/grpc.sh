#!/usr/bin/env bash
# tests/grpc (the foreign-client test) drives the gRPC API from Python grpcio + grpcio-reflection,
# installed from PyPI into a venv under the tools cache. Idempotent and quiet; the test runs it too.
set -euo pipefail
VENV="${REPDIST_PYENV:-$HOME/.cache/repdist-tools/pyenv}"
command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv; }
python3 -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
if ! "$VENV/bin/python" -c 'import grpc, grpc_reflection, google.protobuf' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --timeout 60 'grpcio>=1.60' 'grpcio-reflection>=1.60'
fi
