#!/bin/sh
# Install the wheel mounted at /wheels/$1 into a clean venv, then run $WHEELFLOW_SMOKE there.
set -eu
/opt/venv/bin/pip install --no-cache-dir --quiet "/wheels/$1"
cd /tmp
PATH=/opt/venv/bin:$PATH
export PATH
exec sh -c "${WHEELFLOW_SMOKE:-python -c pass}"
