# Copied from shared/novastack/wsgi (nova-stack recipe); base dir from $CORRAL_STACK_BASE.
import os
BASE = os.environ['CORRAL_STACK_BASE']
os.environ.setdefault('OS_PLACEMENT_CONFIG_DIR', BASE + '/etc/placement')
from placement.wsgi.api import application as _app  # noqa
from wsgi_logger import RecordingMiddleware  # noqa
application = RecordingMiddleware(_app, BASE + '/logs/placement-requests.jsonl')
