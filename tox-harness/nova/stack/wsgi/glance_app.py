# Copied from shared/novastack/wsgi (nova-stack recipe); base dir from $CORRAL_STACK_BASE.
import os, sys
sys.argv = ['glance-api']
BASE = os.environ['CORRAL_STACK_BASE']
os.environ.setdefault('OS_GLANCE_CONFIG_DIR', BASE + '/etc/glance')
from glance.wsgi.api import application as _app  # noqa
from wsgi_logger import RecordingMiddleware  # noqa
application = RecordingMiddleware(_app, BASE + '/logs/glance-requests.jsonl')
