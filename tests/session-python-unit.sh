#!/bin/sh
# The Python client's unit tests (python/tests): the frame decoder on good
# and bad input, and the client against a Python test server, plain and
# TLS (certificates in python/tests/certs).
#
#   tests/session-python-unit.sh SOURCE_DIR
SRC=${1:?usage: session-python-unit.sh SOURCE_DIR}
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
cd "$SRC/python" || exit 1
PYTHONPATH=$SRC/python PYTHONDONTWRITEBYTECODE=1 exec python3 -m unittest discover -s tests
