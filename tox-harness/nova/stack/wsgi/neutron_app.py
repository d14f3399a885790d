# Copied from shared/novastack/wsgi (nova-stack recipe); base dir from $CORRAL_STACK_BASE.
import os, sys
sys.argv = ['neutron-api']
BASE = os.environ['CORRAL_STACK_BASE']
os.environ.setdefault('OS_NEUTRON_CONFIG_DIR', BASE + '/etc/neutron')
from neutron.wsgi.api import application as _app  # noqa
# neutron 29: the Port.port_forwardings backref only exists once SQLAlchemy
# mappers are configured; without this GET /v2.0/ports raises AttributeError.
from sqlalchemy import orm  # noqa
from neutron.db.models import port_forwarding  # noqa
orm.configure_mappers()
from wsgi_logger import RecordingMiddleware  # noqa
application = RecordingMiddleware(_app, BASE + '/logs/neutron-requests.jsonl')
