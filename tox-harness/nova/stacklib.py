"""The Nova stack that scripts/nova-stack.sh brings up, as both of its users see it:
the end-to-end Nova tests (tox-harness/nova) and the benchmark runner
(benches/run.py).

It holds what the two must agree on: where the stack lives and its description
($CORRAL_STACK_BASE/stack.json), the headers nova-api and placement want, read-only
queries on the stack's MariaDB, `nova-manage`, the nova.conf a compute host gets
(corral, or the reference nova-compute with the fake driver), and where the corral
binary is. Plain Python: it imports neither pytest nor nova nor requests, so any of
the harness's virtual environments can load it.
"""

import json
import os
import subprocess

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STACK_SCRIPT = os.path.join(REPO, "scripts", "nova-stack.sh")
STACK_BASE = os.environ.get("CORRAL_STACK_BASE", "/var/tmp/corral-novastack")

# nova 34.0.0 tops out at 2.104 (nova/api/openstack/api_version_request.py
# _MAX_API_VERSION); `host` in POST /servers needs >= 2.74 and the admin role.
COMPUTE_MICROVERSION = "2.104"
PLACEMENT_MICROVERSION = "1.39"


def nova_headers(microversion=COMPUTE_MICROVERSION):
    """nova-api as admin through the stack's noauth pipeline (token `admin:admin`)."""
    return {
        "X-Auth-Token": "admin:admin",
        "OpenStack-API-Version": "compute " + microversion,
        "X-OpenStack-Nova-API-Version": microversion,
        "Accept": "application/json",
    }


def placement_headers(microversion=PLACEMENT_MICROVERSION):
    """placement with its noauth2 strategy (any token is admin)."""
    return {
        "X-Auth-Token": "admin",
        "OpenStack-API-Version": "placement " + microversion,
        "Accept": "application/json",
    }


def stack_up():
    """Runs `nova-stack.sh up` (idempotent; a few seconds when already up) and returns
    the finished process; the caller decides what a failure means to it."""
    return subprocess.run(["bash", STACK_SCRIPT, "up"], capture_output=True, text=True)


class Stack:
    """What nova-stack.sh wrote to $BASE/stack.json: `nova_url`, `placement_url`,
    `glance_url`, `neutron_url`, `transport_url`, `vhost`, `venv`, `nova_conf`,
    `db_user`, `db_password`, `db_prefix`, `hosts`, `logs`, `run`, and the two nova.conf
    snippets every compute host shares."""

    def __init__(self, base=STACK_BASE):
        path = os.path.join(base, "stack.json")
        with open(path) as f:
            d = json.load(f)
        self.__dict__.update(d)
        self.path = path

    def db_name(self, name="nova"):
        """The stack's database of that name (`nova`, `nova_api`, `placement`...)."""
        return self.db_prefix + name

    def db_query(self, sql, db=None, timeout=60):
        """Runs one SELECT on MariaDB as the stack's user (in database `db` when given:
        see db_name); returns the rows as lists of strings."""
        cmd = ["mariadb", "-h127.0.0.1", "-P3306", "-u" + self.db_user, "-p" + self.db_password,
               "-N", "-B"]
        if db:
            cmd.append(db)
        p = subprocess.run(cmd + ["-e", sql], capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError("mariadb query failed: %s: %s" % (sql, p.stderr))
        return [line.split("\t") for line in p.stdout.splitlines() if line]

    def nova_manage(self, *args, timeout=120):
        return subprocess.run(
            [os.path.join(self.venv, "bin", "nova-manage"), "--config-file", self.nova_conf] + list(args),
            capture_output=True, text=True, timeout=timeout,
        )

    def compute_snippets(self):
        """([DEFAULT] options every service shares, the service sections: placement,
        glance, neutron, notifications, vnc), as nova-stack.sh wrote them."""
        with open(self.compute_common_snippet) as f:
            common = f.read().strip()
        with open(self.compute_services_snippet) as f:
            services = f.read().strip()
        return common, services


def _options(opts):
    return "".join("%s = %s\n" % kv for kv in opts.items())


def compute_conf(stack, kind, name, state_dir, *, runtime_root=None, cgroup_parent=None,
                 debug=False, defaults=None, extra=None):
    """The nova.conf of one compute host named `name` on `stack`.

    kind "corral": what the Rust daemon reads; no [database]/[api_database]: like
    nova-compute, corral reaches the DB only through the conductor. Its containers live
    under `runtime_root` (`runc --root RUNTIME_ROOT list`) in cgroup `cgroup_parent`.
    kind "reference": nova-compute from the stack's venv with the in-tree fake driver.

    `defaults`: more [DEFAULT] options. `extra` ({section: {option: value}}): more
    options; those of [corral] join its [corral] block, other sections are appended."""
    common, services = stack.compute_snippets()
    extra = dict(extra or {})
    head = "[DEFAULT]\ndebug = %s\nhost = %s\n%s\nstate_path = %s\n" % (
        "True" if debug else "False", name, common, state_dir)
    if kind == "reference":
        os.makedirs(os.path.join(state_dir, "instances"), exist_ok=True)
        head += ("instances_path = %s/instances\n"
                 "# FakeDriver makes a new node uuid per process; this one persists $state_path/compute_id\n"
                 "compute_driver = fake.FakeDriverWithoutFakeNodes\n") % state_dir
    head += _options(defaults or {})
    body = "\n%s\n\n[oslo_concurrency]\nlock_path = %s/locks\n" % (services, state_dir)
    if kind == "corral":
        body += ("\n[corral]\n# the containers of this host: `runc --root %s list`\n"
                 "oci_runtime = runc\nruntime_root = %s\ncgroup_parent = %s\n"
                 % (runtime_root, runtime_root, cgroup_parent))
        body += _options(extra.pop("corral", {}))
    elif kind != "reference":
        raise ValueError("unknown compute host kind %r" % kind)
    more = "".join("\n[%s]\n%s" % (sec, _options(opts)) for sec, opts in extra.items())
    return head + body + more


def corral_binary(profile="debug"):
    """$CORRAL_BIN, else the cargo build of `profile` under $CARGO_TARGET_DIR or target/."""
    if os.environ.get("CORRAL_BIN"):
        return os.environ["CORRAL_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    if not os.path.isabs(target):
        target = os.path.join(REPO, target)
    return os.path.join(target, profile, "corral")
