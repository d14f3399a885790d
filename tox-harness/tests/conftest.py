"""Fixtures: oslo.messaging transports and servers, and corral's Rust test binaries."""
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'stubs'))

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

RABBIT_URL = os.environ.get('RABBIT_URL', 'rabbit://guest:guest@127.0.0.1:5672/')
ROOT = os.environ.get('CORRAL_RPC_ROOT',
                      os.path.join(os.path.dirname(__file__), '..', '..'))
TARGET_DIR = os.environ.get('CARGO_TARGET_DIR', os.path.join(ROOT, 'target'))
EXAMPLES = os.path.join(TARGET_DIR, 'debug', 'examples')

oslo_messaging.set_transport_defaults('nova')


def uniq(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def url_with(query=None):
    if not query:
        return RABBIT_URL
    sep = '&' if '?' in RABBIT_URL else '?'
    return RABBIT_URL + sep + '&'.join('%s=%s' % kv for kv in query.items())


_CONF_READY = []


def make_conf():
    # oslo registers its tracing/metrics options on cfg.CONF only, so use it
    # as every OpenStack service does; the url query carries per-test options
    if not _CONF_READY:
        cfg.CONF([], project='corral-interop', default_config_files=[],
                 default_config_dirs=[])
        _CONF_READY.append(True)
    return cfg.CONF


def oslo_transport(query=None, allowed=None):
    return oslo_messaging.get_rpc_transport(
        make_conf(), url=url_with(query), allowed_remote_exmods=allowed or [])


def rust_bin(name):
    path = os.path.join(EXAMPLES, name)
    if not os.path.exists(path):
        pytest.fail('%s missing: run cargo build --examples' % path)
    return path


def opt_args(query):
    args = []
    for k, v in (query or {}).items():
        args += ['--opt', '%s=%s' % (k, v)]
    return args


class RustServer:
    def __init__(self, server, topics, query=None, default=None, log=None):
        cmd = [rust_bin('test_server'), '--url', RABBIT_URL, '--server', server]
        for t in topics:
            cmd += ['--topic', t]
        cmd += opt_args(query)
        for k, v in (default or {}).items():
            cmd += ['--default', '%s=%s' % (k, v)]
        self.log = open(log or os.devnull, 'w')
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.info = self._wait_ready(30)

    def _wait_ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if line.startswith('READY '):
                    return json.loads(line[6:])
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        raise RuntimeError('rust test_server did not become ready')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def rust_client(topic, method, args=None, server=None, version=None,
                namespace=None, timeout=10, cm_timeout=None, cast=False,
                fanout=False, context=None, query=None, default=None):
    cmd = [rust_bin('test_client'), '--url', RABBIT_URL, '--topic', topic,
           '--method', method, '--args', json.dumps(args or {}),
           '--timeout', str(timeout)]
    if server:
        cmd += ['--server', server]
    if version:
        cmd += ['--version', version]
    if namespace:
        cmd += ['--namespace', namespace]
    if cm_timeout:
        cmd += ['--cm-timeout', str(cm_timeout)]
    if cast:
        cmd += ['--cast']
    if fanout:
        cmd += ['--fanout']
    if context:
        cmd += ['--context', json.dumps(context)]
    cmd += opt_args(query)
    for k, v in (default or {}).items():
        cmd += ['--default', '%s=%s' % (k, v)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=timeout + 30)
    lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
    assert lines, 'no output from test_client: %s' % out.stderr[-2000:]
    return json.loads(lines[-1])


class PyEndpoint:
    target = oslo_messaging.Target(version='1.0')

    def __init__(self):
        self.records = []

    def add(self, ctxt, a, b):
        return a + b

    def fail(self, ctxt):
        raise ValueError('python says no')

    def slow(self, ctxt, seconds):
        time.sleep(seconds)
        return 'slept'

    def record(self, ctxt, tag):
        self.records.append(tag)

    def get_records(self, ctxt):
        return list(self.records)

    def get_context(self, ctxt):
        return {k: v for k, v in ctxt.items()
                if k not in ('msg_id', 'reply_q', 'client_timeout')}


class PyServer:
    def __init__(self, topic, server, query=None, exchange=None):
        self.transport = oslo_transport(query)
        self.endpoint = PyEndpoint()
        target = oslo_messaging.Target(topic=topic, server=server,
                                       exchange=exchange)
        self.server = oslo_messaging.get_rpc_server(
            self.transport, target, [self.endpoint])
        self.server.start()

    def stop(self):
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()


def wait_for(pred, timeout=10, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def rabbitmqctl(*args):
    exe = shutil.which('rabbitmqctl')
    if not exe:
        return None
    out = subprocess.run([exe, '-q'] + list(args), capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        return None
    return out.stdout


@pytest.fixture
def log_dir(tmp_path):
    return tmp_path


TEST_PREFIXES = ('compute-', 'pyservice-', 'scheduler-', 'cmp-', 'qcompute-')


@pytest.fixture(scope='session', autouse=True)
def remove_leftover_topic_queues():
    """Topic queues outlive their servers, as with oslo; drop ours at the end."""
    yield
    rows = rabbitmqctl('list_queues', 'name', 'consumers', '--formatter',
                       'json')
    if rows is None:
        return
    for q in json.loads(rows):
        if q['name'].startswith(TEST_PREFIXES) and q['consumers'] == 0:
            rabbitmqctl('delete_queue', q['name'])
