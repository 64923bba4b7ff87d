#!/usr/bin/env bash
# Static type check of animate124/ with pyright (config: [tool.pyright] in pyproject.toml). Called from .ci/run.
# pyright is in the dev extra (setup.py); its PyPI wrapper fetches the pyright npm package on first use (needs node
# and the npm registry).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
if ! "$PY" -m pyright --version >/dev/null 2>&1; then
  echo "typecheck: pyright is not installed in $PY's environment; run make setup (it is in the dev extra)" >&2
  exit 2
fi
exec "$PY" -m pyright --pythonpath "$PY" animate124
