# Copied from shared/novastack/wsgi (nova-stack recipe); base dir from $CORRAL_STACK_BASE.
import os, sys
# nova's wsgi_app parses sys.argv with oslo.config; gunicorn's own argv would make it exit(2)
sys.argv = ['nova-api']
BASE = os.environ['CORRAL_STACK_BASE']
os.environ.setdefault('OS_NOVA_CONFIG_DIR', BASE + '/etc/nova')
# first file must be the paste ini; nova-api.conf only adds a log_file
os.environ.setdefault('OS_NOVA_CONFIG_FILES', 'api-paste.ini;nova.conf;nova-api.conf')
from nova.wsgi.osapi_compute import application as _app  # noqa
from wsgi_logger import RecordingMiddleware  # noqa
application = RecordingMiddleware(_app, BASE + '/logs/nova-api-requests.jsonl')
