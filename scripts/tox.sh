#!/bin/bash
# Runs the tox harness (real oslo.messaging and real Nova from PyPI) with a tox
# installed into its own venv. Arguments go to tox (default: every env in envlist).
#   scripts/tox.sh            # all envs
#   scripts/tox.sh -e oslo    # one env
set -eu
cd "$(dirname "$0")/.."
venv=${CORRAL_TOX_VENV:-/var/tmp/corral-tox}
if [ ! -x "$venv/bin/tox" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "tox>=4,<5"
fi
scripts/services.sh --mariadb
exec "$venv/bin/tox" -c tox-harness/tox.ini "$@"
