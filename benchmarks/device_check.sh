#!/usr/bin/env bash
# The device check on a machine with one accelerator (see benchmarks/device_check.py).
#
# Any pure-Python package the machine lacks (gin-config, tensorboardX: accelerator images
# rarely have them, and such machines often reach no package index) is installed from the
# wheels in $WHEELS (default .whl/) into a private folder first; nothing else is installed.
# Fill that folder on a machine with an index:
#   pip download --no-deps --only-binary=:all: -d .whl gin-config tensorboardX
#
# Usage: benchmarks/device_check.sh [device_check.py arguments, e.g. --out DIR --smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${WHEELS:-.whl}"
site="${TMPDIR:-/tmp}/normgrowth_device_site"
if compgen -G "$wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 benchmarks/device_check.py "$@"
