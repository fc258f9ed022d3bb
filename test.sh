#!/usr/bin/env bash
# The tests, on a fresh machine too: creates .venv when missing, installs
# requirements-test.txt into it (quietly; skipped when unchanged), runs pytest.
#
#   bash test.sh                          # the whole suite (CPU, a few minutes)
#   bash test.sh tests/test_grading.py    # arguments go to pytest instead of `tests`
#
# Environment: PYTHON (run the tests with this interpreter, as it is: no venv, no install).
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else
  source ./venv.sh
  ensure_venv requirements-test.txt
  PY=$VENV_PY
fi
if [ $# -eq 0 ]; then set -- tests; fi
exec "$PY" -m pytest -q "$@"
