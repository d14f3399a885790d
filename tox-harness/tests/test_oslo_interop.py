"""oslo.messaging 18.3.1 (Python) talking to corral's rpc crate (Rust), both ways."""
import json
import time

import oslo_messaging
import pytest
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from conftest import (PyServer, RustServer, oslo_transport, rabbitmqctl,
                      rust_client, uniq, url_with, wait_for)

CTX = {'request_id': 'req-11111111-2222-3333-4444-555555555555',
       'user_id': 'u1', 'project_id': 'p1', 'is_admin': True,
       'roles': ['admin'], 'timestamp': '2026-01-02T03:04:05.678901'}


@pytest.fixture
def rust_server(log_dir):
    started = []

    def start(server, topics, **kw):
        s = RustServer(server, topics,
                       log=str(log_dir / ('%s.log' % server)), **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def py_server():
    started = []

    def start(topic, server, **kw):
        s = PyServer(topic, server, **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def transports():
    made = []

    def make(query=None, allowed=None):
        t = oslo_transport(query, allowed)
        made.append(t)
        return t
    yield make
    for t in made:
        t.cleanup()


def client(transport, topic, server=None, version='1.0', **kw):
    target = oslo_messaging.Target(topic=topic, server=server, version=version,
                                   **{k: v for k, v in kw.items()
                                      if k in ('namespace', 'fanout',
                                               'exchange')})
    opts = {k: v for k, v in kw.items()
            if k in ('timeout', 'call_monitor_timeout')}
    return oslo_messaging.get_rpc_client(transport, target, **opts)


def test_python_calls_and_casts_into_rust(rust_server, transports):
    topic = uniq('compute')
    rust_server('host1', [topic, topic + '-alt'])
    c = client(transports(), topic, server='host1', timeout=10)
    assert c.call(CTX, 'add', a=2, b=40) == 42
    value = {'s': 'é☃😀', 'f': 1.5, 'big': 2 ** 40, 'l': [None, True],
             'nested': {'nova_object.name': 'Instance'}}
    assert c.call(CTX, 'echo', value=value) == value
    # the context arrives as the _context_* keys
    got = c.call(CTX, 'get_context')
    assert got == CTX
    # casts are handled; the shared topic queue also works
    c.cast(CTX, 'record', tag='cast-1')
    c.prepare(server=None).cast(CTX, 'record', tag='cast-2')
    assert wait_for(lambda: len(c.call(CTX, 'get_records')) == 2)
    assert sorted(c.call(CTX, 'get_records')) == ['cast-1', 'cast-2']
    # one server, several topics (compute and compute-alt)
    alt = client(transports(), topic + '-alt', server='host1', timeout=10)
    assert alt.call(CTX, 'whoami') == {'server': 'host1',
                                       'topic': topic + '-alt'}
    # namespaced endpoint (nova's baseapi ping)
    ping = client(transports(), topic, server='host1', version='1.0',
                  namespace='baseapi', timeout=10)
    assert ping.call(CTX, 'ping', arg='x') == {'service': 'test_server',
                                               'arg': 'x'}


def test_remote_failures_rebuild_as_python_exceptions(rust_server, transports):
    topic = uniq('compute')
    rust_server('host1', [topic])
    allowed = ['nova.exception', 'oslo_messaging.rpc.dispatcher']
    c = client(transports(allowed=allowed), topic, server='host1', timeout=10)

    from nova import exception as nova_exc
    with pytest.raises(nova_exc.InstanceNotFound) as ei:
        c.call(CTX, 'fail_nova', instance_id='abc')
    e = ei.value
    assert type(e).__name__ == 'InstanceNotFound_Remote'
    assert type(e).__module__ == 'nova.exception_Remote'
    assert e.kwargs == {'instance_id': 'abc', 'code': 404}
    assert e.message == 'Instance abc could not be found.'

    with pytest.raises(ValueError) as ei:
        c.call(CTX, 'fail_value', message='nope')
    assert 'nope' in str(ei.value)
    with pytest.raises(NotImplementedError):
        c.call(CTX, 'not_implemented')
    with pytest.raises(rpc_dispatcher.NoSuchMethod) as ei:
        c.call(CTX, 'frobnicate')
    assert 'Endpoint does not support RPC method frobnicate' in str(ei.value)
    with pytest.raises(rpc_dispatcher.UnsupportedVersion) as ei:
        c.prepare(version='2.0').call(CTX, 'add', a=1, b=2)
    assert ('Endpoint does not support RPC version 2.0. '
            'Attempted method: add') in str(ei.value)

    # without allowed modules the caller gets oslo's generic RemoteError
    plain = client(transports(), topic, server='host1', timeout=10)
    with pytest.raises(oslo_messaging.RemoteError) as ei:
        plain.call(CTX, 'fail_nova', instance_id='abc')
    assert ei.value.exc_type == 'InstanceNotFound'
    assert ei.value.value == 'Instance abc could not be found.'
    with pytest.raises(oslo_messaging.RemoteError) as ei:
        plain.call(CTX, 'frobnicate')
    assert ei.value.exc_type == 'NoSuchMethod'


def test_call_monitor_heartbeats_keep_long_calls_alive(rust_server,
                                                      transports):
    topic = uniq('compute')
    rust_server('host1', [topic])
    t = transports()
    # 5 s of work, no reply within the 2 s call-monitor window: only the
    # server's heartbeats (every 1 s) keep the call alive
    c = client(t, topic, server='host1', timeout=20, call_monitor_timeout=2)
    start = time.time()
    assert c.call(CTX, 'sleep', seconds=5) == 'slept'
    assert time.time() - start >= 5
    # the overall timeout still applies
    c = client(t, topic, server='host1', timeout=2)
    with pytest.raises(oslo_messaging.MessagingTimeout):
        c.call(CTX, 'sleep', seconds=4)


def test_rust_client_calls_python_server(py_server):
    topic = uniq('pyservice')
    srv = py_server(topic, 'pyhost')
    assert rust_client(topic, 'add', {'a': 20, 'b': 22}, server='pyhost',
                       version='1.0') == {'result': 42}
    out = rust_client(topic, 'fail', server='pyhost', version='1.0')
    err = out['error']
    assert err['type'] == 'remote'
    assert (err['module'], err['exc_type']) == ('builtins', 'ValueError')
    assert err['value'] == 'python says no'
    assert err['traceback'][0].startswith('Traceback')
    out = rust_client(topic, 'nope', server='pyhost', version='1.0')
    assert out['error']['exc_type'] == 'NoSuchMethod'
    assert out['error']['module'] == 'oslo_messaging.rpc.dispatcher'
    # context travels as _context_* keys and comes back intact
    assert rust_client(topic, 'get_context', server='pyhost', version='1.0',
                       context=CTX) == {'result': CTX}
    # python's heartbeats keep a 5 s call alive with a 2 s call monitor
    assert rust_client(topic, 'slow', {'seconds': 5}, server='pyhost',
                       version='1.0', timeout=20,
                       cm_timeout=2) == {'result': 'slept'}
    # no reply in time: typed timeout
    out = rust_client(topic, 'slow', {'seconds': 4}, server='pyhost',
                      version='1.0', timeout=1)
    assert out['error']['type'] == 'timeout'
    # a cast
    assert rust_client(topic, 'record', {'tag': 'from-rust'}, server='pyhost',
                       version='1.0', cast=True) == {'result': None}
    assert wait_for(lambda: srv.endpoint.records == ['from-rust'])


def test_fanout_reaches_rust_and_python(rust_server, py_server, transports):
    topic = uniq('scheduler')
    rust_server('r1', [topic])
    rust_server('r2', [topic])
    py = py_server(topic, 'p1')
    t = transports()
    fan = client(t, topic, fanout=True)
    fan.cast(CTX, 'record', tag='py-fanout')
    assert rust_client(topic, 'record', {'tag': 'rust-fanout'},
                       version='1.0', fanout=True) == {'result': None}

    def records(server):
        return client(t, topic, server=server, timeout=10).call(
            CTX, 'get_records')
    for s in ('r1', 'r2'):
        assert wait_for(lambda: sorted(records(s)) == ['py-fanout',
                                                       'rust-fanout']), s
    assert wait_for(lambda: sorted(py.endpoint.records) == ['py-fanout',
                                                            'rust-fanout'])


def test_declarations_match_oslo(rust_server, py_server):
    """The queues corral declares look exactly like the ones oslo declares."""
    if rabbitmqctl('status') is None:
        pytest.skip('rabbitmqctl not available to inspect queues')
    topic_r, topic_p = uniq('cmp'), uniq('cmp')
    r = rust_server('host1', [topic_r])
    py_server(topic_p, 'host1')
    rows = rabbitmqctl('list_queues', 'name', 'durable', 'auto_delete',
                       'exclusive', 'arguments', '--formatter', 'json')
    queues = {q['name']: q for q in json.loads(rows)}

    def shape(name, topic):
        q = queues[name]
        return (name.replace(topic, 'T'), q['durable'], q['auto_delete'],
                q['exclusive'], sorted(map(tuple, q['arguments'])))
    rust = sorted(shape(n, topic_r) for n in queues
                  if n.startswith(topic_r + '.') or n == topic_r)
    py = sorted(shape(n, topic_p) for n in queues
                if n.startswith(topic_p + '.') or n == topic_p)
    assert rust == py and len(rust) == 2
    rf = [n for n in queues if n.startswith(topic_r + '_fanout_')]
    pf = [n for n in queues if n.startswith(topic_p + '_fanout_')]
    assert rf == r.info['fanout_queues']
    assert len(rf) == 1 and len(pf) == 1
    assert len(rf[0]) == len(pf[0]) - len(topic_p) + len(topic_r)
    assert shape(rf[0], topic_r)[1:] == shape(pf[0], topic_p)[1:]
    exchanges = {e['name']: e for e in json.loads(rabbitmqctl(
        'list_exchanges', 'name', 'type', 'durable', 'auto_delete',
        '--formatter', 'json'))}
    for suffix in ('_fanout',):
        er, ep = exchanges[topic_r + suffix], exchanges[topic_p + suffix]
        assert (er['type'], er['durable'], er['auto_delete']) == \
            (ep['type'], ep['durable'], ep['auto_delete'])


def test_quorum_settings_interoperate(transports, log_dir):
    query = {'rabbit_quorum_queue': 'true',
             'rabbit_transient_quorum_queue': 'true'}
    exchange = uniq('quorum-exchange')
    topic = uniq('qcompute')
    rust = RustServer('qr', [topic], query=query,
                      default={'control_exchange': exchange},
                      log=str(log_dir / 'qr.log'))
    py = None
    try:
        # a python server on the same topic declares the same shared queue:
        # any difference in flags or arguments would make it fail with
        # PRECONDITION_FAILED here
        py = PyServer(topic, 'qp', query=query, exchange=exchange)
        t = transports(query)
        c = client(t, topic, server='qr', timeout=10, exchange=exchange)
        assert c.call(CTX, 'add', a=1, b=2) == 3
        assert client(t, topic, server='qp', timeout=10,
                      exchange=exchange).call(CTX, 'add', a=3, b=4) == 7
        out = rust_client(topic, 'add', {'a': 5, 'b': 6}, server='qp',
                          version='1.0', query=query,
                          default={'control_exchange': exchange})
        assert out == {'result': 11}
        rows = rabbitmqctl('list_queues', 'name', 'type', 'durable',
                           'arguments', '--formatter', 'json')
        if rows is not None:
            queues = {q['name']: q for q in json.loads(rows)}
            for name in (topic, topic + '.qr', topic + '.qp'):
                assert queues[name]['type'] == 'quorum', name
                assert queues[name]['durable'] is True
            fan = [n for n in queues if n.startswith(topic + '_fanout_')]
            assert len(fan) == 2
            for n in fan:
                assert queues[n]['type'] == 'quorum'
                assert ['x-expires', 'signedint', 1800000] in \
                    queues[n]['arguments']
            # rust's and python's fanout queues: same arguments, same types
            args = [sorted(map(tuple, queues[n]['arguments'])) for n in fan]
            assert args[0] == args[1]
            replies = [q for n, q in queues.items() if n.startswith('reply_')
                       and q['type'] == 'quorum']
            assert replies, 'quorum reply queues expected'
    finally:
        rust.stop()
        if py is not None:
            py.stop()
        # durable quorum queues outlive their consumers
        for name in (topic, topic + '.qr', topic + '.qp'):
            rabbitmqctl('delete_queue', name)
        rabbitmqctl('eval', 'ok.')
