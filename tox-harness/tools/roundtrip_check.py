#!/usr/bin/env python3
"""Decode bodies re-encoded by the Rust wire model with the real nova / oslo code.

Usage:
    NOVA_WIRE_DUMP_DIR=/tmp/nw cargo test --test fixtures
    python3 tests/roundtrip_check.py /tmp/nw

Needs a Python >= 3.11 environment with ``nova==34.0.0`` installed (it brings
oslo.messaging 18.x, oslo.versionedobjects, oslo.context), e.g.::

    python3 -m venv /tmp/novavenv && /tmp/novavenv/bin/pip install nova==34.0.0
    /tmp/novavenv/bin/python tests/roundtrip_check.py /tmp/nw

For every ``NNNNN.json`` (a body the Rust encoder wrote) this does what a nova
service does on receipt:

* ``oslo_messaging._drivers.common.deserialize_msg`` (envelope version check,
  JSON-in-JSON);
* requests: ``RequestContext.from_dict`` through nova's ``RequestContextSerializer``
  (strict ``timestamp`` parsing) and ``NovaObjectSerializer.deserialize_entity`` on
  every argument (builds the nova objects, coercing every field);
* replies: the result through the same serializer, and the failure through
  ``deserialize_remote_exception`` with nova's allowed modules;

and, when ``NNNNN.orig`` (the captured body) is beside it, checks that the bytes are
identical and that re-serializing the decoded objects with nova gives the same
primitives. Exit status 1 if anything fails.
"""

import json
import pathlib
import sys


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    try:
        from nova import context as nova_context  # noqa: F401
        from nova import objects
        from nova import rpc as nova_rpc
        from nova.objects import base as objects_base
        from oslo_messaging._drivers import common as rpc_common
    except ImportError as exc:  # pragma: no cover - environment dependent
        print(f"cannot import nova/oslo ({exc}); install nova==34.0.0 in a venv",
              file=sys.stderr)
        return 2

    objects.register_all()
    serializer = nova_rpc.RequestContextSerializer(
        objects_base.NovaObjectSerializer())
    # nova.rpc.ALLOWED_EXMODS without needing nova.rpc.init()
    allowed = ['nova.exception']

    directory = pathlib.Path(argv[1])
    files = sorted(directory.glob('*.json'))
    ok = failed = identical = 0
    for path in files:
        body = path.read_text()
        try:
            msg = rpc_common.deserialize_msg(json.loads(body))
            if 'method' in msg:
                if path.name.startswith('built-'):
                    print(f"{path.name}: {msg['method']} "
                          f"{json.dumps(msg['args'])[:300]}")
                ctxt_dict = {k[len('_context_'):]: v for k, v in msg.items()
                             if k.startswith('_context_')}
                ctxt = serializer.deserialize_context(ctxt_dict)
                for name, arg in msg.get('args', {}).items():
                    entity = serializer.deserialize_entity(ctxt, arg)
                    again = serializer.serialize_entity(ctxt, entity)
                    if _has_objects(arg) and not _same_primitive(arg, again):
                        raise AssertionError(
                            f"argument {name} re-serializes differently")
            else:
                from nova import context as ctx_mod
                ctxt = ctx_mod.get_admin_context()
                serializer.deserialize_entity(ctxt, msg.get('result'))
                if msg.get('failure'):
                    exc = rpc_common.deserialize_remote_exception(
                        msg['failure'], allowed)
                    want = json.loads(msg['failure']).get('class')
                    got = type(exc).__name__
                    if got not in (want, f"{want}_Remote"):
                        raise AssertionError(
                            f"failure rebuilt as {got}, not {want}")
            orig = path.with_suffix('.orig')
            if orig.exists():
                if orig.read_text() == body:
                    identical += 1
                else:
                    raise AssertionError('bytes differ from the captured body')
            ok += 1
        except Exception as exc:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"{path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"{ok} decoded by nova, {failed} failed, {identical} byte-identical "
          f"to the capture, of {len(files)}")
    return 1 if failed or not files else 0


def _has_objects(value):
    if isinstance(value, dict):
        return 'nova_object.name' in value or any(
            _has_objects(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_objects(v) for v in value)
    return False


def _same_primitive(a, b):
    """Equal up to the order of ``nova_object.changes`` (a Python set)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return False
        for k in a:
            if k == 'nova_object.changes':
                if sorted(a[k]) != sorted(b[k]):
                    return False
            elif not _same_primitive(a[k], b[k]):
                return False
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(
            _same_primitive(x, y) for x, y in zip(a, b))
    return a == b


if __name__ == '__main__':
    sys.exit(main(sys.argv))
