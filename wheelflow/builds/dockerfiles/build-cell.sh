#!/bin/sh
# Build one wheel: the project is mounted read-only at /src; the wheel goes to /out.
# pip reaches the index with the host's CA bundle (PIP_CERT) and caches in /root/.cache/pip.
set -eu
mkdir -p /tmp/src
cd /src && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude=./.wheelflow -cf - . | tar -C /tmp/src -xf -
/opt/wheelflow/bin/pip install --quiet --upgrade build
exec /opt/wheelflow/bin/python -m build --wheel --outdir /out /tmp/src
