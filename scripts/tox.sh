#!/bin/bash
# Runs the tox harness (real oslo.messaging and real Nova from PyPI) with a tox
# installed into its own venv. Arguments go to tox (default: every env in envlist).
#   scripts/tox.sh            # all envs
#   scripts/tox.sh -e oslo    # one env
set -eu
cd "$(dirname "$0")/.."
# A stack of its own for this checkout (parallel stacks must not share ports,
# databases or a vhost). Local setting: not to be committed.
export CORRAL_STACK_BASE=${CORRAL_STACK_BASE:-/var/tmp/corral-novastack-neutron} \
    CORRAL_STACK_DB_PREFIX=${CORRAL_STACK_DB_PREFIX:-corraln_} \
    CORRAL_STACK_VHOST=${CORRAL_STACK_VHOST:-corral_nova_neutron} \
    CORRAL_STACK_PORT_PLACEMENT=28778 CORRAL_STACK_PORT_NOVA=28774 \
    CORRAL_STACK_PORT_GLANCE=29292 CORRAL_STACK_PORT_NEUTRON=29696
venv=${CORRAL_TOX_VENV:-/var/tmp/corral-tox}
if [ ! -x "$venv/bin/tox" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "tox>=4,<5"
fi
scripts/services.sh --mariadb
exec "$venv/bin/tox" -c tox-harness/tox.ini "$@"
