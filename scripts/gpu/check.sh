#!/usr/bin/env bash
# The one GPU check: bash scripts/gpu/check.sh [--rehearse] [--only STAGE[,STAGE]] [--out DIR]
# Stages, budgets and outputs: scripts/gpu/check.py; the procedure: docs/benchmarks.md ("The GPU check").
# On the GPU machine python3 is the image's Python (torch 2.11+cu130); in --rehearse the repo's .venv when present.
set -uo pipefail
cd "$(dirname "$0")/../.."
py="${PYTHON:-python3}"
case " $* " in *" --rehearse "*) [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python ;; esac
exec "$py" scripts/gpu/check.py "$@"
