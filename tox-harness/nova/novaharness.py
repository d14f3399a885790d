"""Helpers for the end-to-end Nova tests: the stack description, REST clients for
nova-api and placement, and the compute hosts (reference nova-compute with the fake
driver, or the corral daemon) that the tests start against the real control plane.

Everything here talks plain HTTP to the stack that scripts/nova-stack.sh brought up
(its description is $CORRAL_STACK_BASE/stack.json); nothing imports nova.
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest
import requests

import stacklib
from stacklib import COMPUTE_MICROVERSION, REPO, STACK_BASE, corral_binary  # noqa: F401

IMAGE_SCRIPT = os.path.join(REPO, "openstack", "images", "build-busybox-rootfs.sh")

TRANSITION_TIMEOUT = float(os.environ.get("CORRAL_NOVA_TRANSITION_TIMEOUT", "120"))
HOST_UP_TIMEOUT = float(os.environ.get("CORRAL_NOVA_HOST_UP_TIMEOUT", "60"))
LOG_TAIL_LINES = int(os.environ.get("CORRAL_NOVA_LOG_TAIL", "40"))

# Host names of this harness start with these; a later session removes stale ones.
HOST_PREFIX = {"reference": "ref-", "corral": "corral-"}
CGROUP_PARENT = "corral-nova-test"
RUNTIME_ROOT_BASE = "/run/corral-nova-test"


def _now():
    return time.time()


def _utc_ts(s):
    """Nova's naive-UTC ISO timestamps as epoch seconds."""
    if not s:
        return None
    d = datetime.datetime.fromisoformat(s.replace("Z", ""))
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return d.timestamp()


# ----------------------------------------------------------------------------- stack


class Stack(stacklib.Stack):
    """What nova-stack.sh wrote to $BASE/stack.json (see stacklib.Stack)."""

    @staticmethod
    def ensure_up():
        """Runs `nova-stack.sh up` (idempotent; about 3 s when already up)."""
        t0 = _now()
        p = stacklib.stack_up()
        if p.returncode != 0:
            pytest.exit(
                "scripts/nova-stack.sh up failed (rc %d):\n%s\n%s"
                % (p.returncode, p.stdout[-4000:], p.stderr[-4000:]),
                returncode=3,
            )
        return _now() - t0


# ----------------------------------------------------------------------------- REST


class ApiError(AssertionError):
    pass


class RestClient:
    def __init__(self, base, headers):
        self.base = base.rstrip("/")
        self.s = requests.Session()
        self.s.headers.update(headers)

    def request(self, method, path, expect=None, **kw):
        kw.setdefault("timeout", 60)
        r = self.s.request(method, self.base + path, **kw)
        if expect is not None:
            expected = (expect,) if isinstance(expect, int) else tuple(expect)
            if r.status_code not in expected:
                raise ApiError("%s %s -> %d (expected %s): %s"
                               % (method, path, r.status_code, expected, r.text[:2000]))
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, json=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, json=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


class Nova(RestClient):
    """nova-api as admin (noauth token `admin:admin`), microversion 2.104."""

    def __init__(self, stack):
        super().__init__(stack.nova_url, stacklib.nova_headers())

    def server(self, sid):
        """The server dict, or None once it is gone (404)."""
        r = self.get("/servers/" + sid, expect=(200, 404))
        return None if r.status_code == 404 else r.json()["server"]

    def action(self, sid, body, expect=202):
        return self.post("/servers/%s/action" % sid, body, expect=expect)

    def services(self, host=None, binary="nova-compute"):
        q = "?binary=" + binary + ("&host=" + host if host else "")
        return self.get("/os-services" + q, expect=200).json()["services"]


class Placement(RestClient):
    def __init__(self, stack):
        super().__init__(stack.placement_url, stacklib.placement_headers())

    def provider(self, name):
        rps = self.get("/resource_providers?name=" + name, expect=200).json()["resource_providers"]
        return rps[0] if rps else None

    def inventories(self, rp_uuid):
        return self.get("/resource_providers/%s/inventories" % rp_uuid, expect=200).json()["inventories"]

    def usages(self, rp_uuid):
        return self.get("/resource_providers/%s/usages" % rp_uuid, expect=200).json()["usages"]

    def allocations(self, consumer):
        return self.get("/allocations/" + consumer, expect=200).json()["allocations"]


# ----------------------------------------------------------------------------- waits


def describe_server(srv):
    if srv is None:
        return "server is gone (404)"
    keys = ("status", "OS-EXT-STS:vm_state", "OS-EXT-STS:task_state", "OS-EXT-STS:power_state",
            "OS-EXT-SRV-ATTR:host")
    s = ", ".join("%s=%s" % (k.split(":")[-1], srv.get(k)) for k in keys)
    if srv.get("fault"):
        f = srv["fault"]
        s += "\n  fault: code=%s message=%r\n  details: %s" % (
            f.get("code"), f.get("message"), (f.get("details") or "")[:3000])
    return s


def _host_logs(host):
    """Log excerpts of one host, a list of hosts, or none."""
    if host is None:
        return ""
    hs = host if isinstance(host, (list, tuple)) else [host]
    return "".join("\n" + h.log_excerpt() for h in hs)


def wait_server(nova, sid, status, host=None, timeout=TRANSITION_TIMEOUT, what=None):
    """Polls GET /servers/{id} until `status` with task_state null. ERROR (when not the
    goal) fails at once. On failure the message has the server's fault and the host's log tail."""
    deadline = _now() + timeout
    srv = None
    while True:
        srv = nova.server(sid)
        if srv is None:
            break
        if srv["status"] == status and srv.get("OS-EXT-STS:task_state") is None:
            return srv
        if srv["status"] == "ERROR" and status != "ERROR":
            break
        if _now() > deadline:
            break
        time.sleep(0.2)
    msg = "%s: server %s did not reach %s with task_state null within %.0f s\n  last: %s" % (
        what or "transition", sid, status, timeout, describe_server(srv))
    msg += _host_logs(host)
    raise AssertionError(msg)


def wait_gone(nova, sid, host=None, timeout=TRANSITION_TIMEOUT):
    deadline = _now() + timeout
    srv = None
    while _now() < deadline:
        srv = nova.server(sid)
        if srv is None:
            return
        if srv["status"] == "ERROR" and srv.get("OS-EXT-STS:task_state") is None:
            break
        time.sleep(0.2)
    msg = "delete: server %s still exists after %.0f s\n  last: %s" % (sid, timeout, describe_server(srv))
    msg += _host_logs(host)
    raise AssertionError(msg)


def wait_for(pred, timeout, interval=0.25):
    deadline = _now() + timeout
    while True:
        v = pred()
        if v:
            return v
        if _now() > deadline:
            return v
        time.sleep(interval)


# ----------------------------------------------------------------------------- hosts


class HostStartError(Exception):
    pass


class ComputeHost:
    """One compute service process registered with the stack under `name`."""

    kind = None

    def __init__(self, stack, nova, placement, name, extra_conf=None):
        self.stack, self.nova, self.placement, self.name = stack, nova, placement, name
        # {section: {option: value}} added to its nova.conf, e.g.
        # {"corral": {"allow_privileged": "false"}, "compute": {"cpu_dedicated_set": "1"}}
        self.extra_conf = extra_conf or {}
        self.dir = os.path.join(stack.hosts, name)
        self.state_dir = os.path.join(self.dir, "state")
        self.conf = os.path.join(self.dir, "nova.conf")
        self.log = os.path.join(stack.logs, "host-%s.log" % name)
        self.pidfile = os.path.join(stack.run, "host-%s.pid" % name)
        self.proc = None
        self.started_at = None
        self.rp_uuid = None

    # -- overridden per kind
    runtime_root = None

    def command(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    # -- common
    def write_conf(self):
        with open(self.conf, "w") as f:
            f.write(stacklib.compute_conf(self.stack, self.kind, self.name, self.state_dir,
                                          runtime_root=self.runtime_root, cgroup_parent=CGROUP_PARENT,
                                          debug=self.kind == "corral", extra=self.extra_conf))

    def start(self):
        os.makedirs(self.state_dir, exist_ok=True)
        self.write_conf()
        logf = open(self.log, "ab")
        logf.write(("\n===== %s: starting %s host %s: %s\n" % (
            datetime.datetime.now().isoformat(), self.kind, self.name, " ".join(self.command()))).encode())
        logf.flush()
        self.started_at = _now()
        self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir,
                                     env=self.env())
        logf.close()
        with open(self.pidfile, "w") as f:
            f.write(str(self.proc.pid))
        # the session that owns it: a later session only reaps hosts whose owner is gone
        with open(self.pidfile[:-4] + ".session", "w") as f:
            f.write(str(os.getpid()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """SIGTERM without waiting (stop() waits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=30):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        for f in (self.pidfile, self.pidfile[:-4] + ".session"):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass

    def log_tail(self, n=LOG_TAIL_LINES):
        try:
            with open(self.log, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return "(no log at %s)" % self.log
        return "\n".join(lines[-n:])

    def log_excerpt(self):
        state = "running" if self.alive() else "NOT running (exit %s)" % (
            self.proc.returncode if self.proc else "-")
        return "  %s host %s (%s), log %s, last %d lines:\n%s" % (
            self.kind, self.name, state, self.log, LOG_TAIL_LINES,
            "\n".join("    | " + line for line in self.log_tail().splitlines()))

    def service(self):
        svcs = self.nova.services(host=self.name)
        return svcs[0] if svcs else None

    def _fail(self, what):
        raise HostStartError("%s host %s %s; log tail:\n%s" % (self.kind, self.name, what, self.log_excerpt()))

    def wait_ready(self, timeout=HOST_UP_TIMEOUT):
        """Up in os-services with a heartbeat from this process, a resource provider with
        inventory in placement, and a host mapping (so the scheduler can pick it)."""
        self.wait_up(timeout)
        discover([self])

    def wait_up(self, timeout=HOST_UP_TIMEOUT):
        """Up in os-services with a heartbeat from this process and a resource provider
        with inventory in placement."""
        since = int(self.started_at)
        deadline = self.started_at + timeout

        def up():
            if not self.alive():
                self._fail("exited (code %s) before coming up in os-services" % self.proc.returncode)
            sv = self.service()
            if not sv or sv["state"] != "up":
                return False
            # a restarted host shows up with the previous heartbeat: wait for a fresh one
            t = _utc_ts(sv.get("updated_at"))
            return t is None or t >= since

        while not up():
            if _now() > deadline:
                sv = self.service()
                self._fail("did not come up in os-services within %.0f s (service row: %s)" % (
                    timeout, json.dumps(sv) if sv else "none"))
            time.sleep(0.3)

        def rp():
            p = self.placement.provider(self.name)
            if p and self.placement.inventories(p["uuid"]):
                return p
            return None

        p = wait_for(rp, max(5, deadline - _now()) + 15)
        if not p:
            self._fail("is up in os-services but has no resource provider with inventory in placement "
                       "within %.0f s" % (_now() - self.started_at))
        self.rp_uuid = p["uuid"]

    def cleanup_state(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def discover(hosts):
    """Host mappings for `hosts`: the scheduler's periodic discovery (every 2 s) may have
    made them already; otherwise one `nova-manage cell_v2 discover_hosts` for all."""
    if not hosts:
        return
    stack = hosts[0].stack

    def unmapped():
        names = ",".join("'%s'" % h.name for h in hosts)
        rows = stack.db_query("select host from %snova_api.host_mappings where host in (%s)"
                              % (stack.db_prefix, names))
        have = {r[0] for r in rows}
        return [h for h in hosts if h.name not in have]

    out = ""
    for _ in range(3):
        missing = unmapped()
        if not missing:
            return
        p = stack.nova_manage("cell_v2", "discover_hosts")
        out += p.stdout + p.stderr
    missing = unmapped()
    if missing:
        missing[0]._fail("has no host mapping after nova-manage cell_v2 discover_hosts:\n" + out[-2000:])


class ReferenceHost(ComputeHost):
    """nova-compute from the stack's venv with the in-tree fake driver (the oracle)."""

    kind = "reference"

    def command(self):
        return [os.path.join(self.stack.venv, "bin", "nova-compute"), "--config-file", self.conf,
                "--log-file", self.log]


class CorralHost(ComputeHost):
    """The Rust daemon: `corral daemon --config-file nova.conf --state-dir D --socket S`."""

    kind = "corral"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.runtime_root = os.path.join(RUNTIME_ROOT_BASE, self.name)
        self.socket = os.path.join(self.dir, "corral.sock")

    def env(self):
        e = dict(os.environ)
        e.setdefault("NO_COLOR", "1")
        # debug = True in its nova.conf; keep the per-query/per-connection noise out of the log
        e.setdefault("CORRAL_LOG", "debug,sqlx=warn,hyper_util=info,reqwest=info,h2=info,lapin=info,"
                                   "actix_server=warn")
        # a crash point armed for the next start only (CORRAL_CRASH_AT, src/crashpoint.rs)
        crash, self.crash_at = getattr(self, "crash_at", None), None
        if crash:
            e["CORRAL_CRASH_AT"] = crash
        else:
            e.pop("CORRAL_CRASH_AT", None)
        return e

    def command(self):
        return [corral_binary(), "daemon", "--config-file", self.conf, "--state-dir", self.state_dir,
                "--socket", self.socket]

    def start(self):
        b = corral_binary()
        if not os.access(b, os.X_OK):
            raise HostStartError("corral binary %s is missing: run `cargo build` (or set CORRAL_BIN)" % b)
        super().start()

    # -- the container behind a server
    def runc(self, *args):
        return subprocess.run(["runc", "--root", self.runtime_root] + list(args),
                              capture_output=True, text=True, timeout=30)

    def container_state(self, cid):
        p = self.runc("state", cid)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def containers(self):
        if not os.path.isdir(self.runtime_root):
            return []
        p = self.runc("list", "--format", "json")
        if p.returncode != 0:
            return []
        return json.loads(p.stdout or "null") or []

    def cleanup_state(self):
        for c in self.containers():
            self.runc("delete", "--force", c["id"])
        shutil.rmtree(self.runtime_root, ignore_errors=True)
        super().cleanup_state()


HOST_CLASSES = {"reference": ReferenceHost, "corral": CorralHost}


# ----------------------------------------------------------------------------- cgroups


def cgroup_limits(pid):
    """(memory limit bytes, cpu quota/period as float or None, cgroup paths) of a process,
    for cgroup v1 or v2."""
    with open("/proc/%d/cgroup" % pid) as f:
        lines = [line.strip().split(":", 2) for line in f if line.strip()]
    paths = {}
    for _hid, ctrls, path in lines:
        for c in (ctrls.split(",") if ctrls else [""]):
            paths[c] = path
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers") and "" in paths and len(paths) == 1:
        d = "/sys/fs/cgroup" + paths[""]
        mem = open(d + "/memory.max").read().strip()
        quota, period = open(d + "/cpu.max").read().split()
        mem_v = None if mem == "max" else int(mem)
        cpu_v = None if quota == "max" else int(quota) / int(period)
        return mem_v, cpu_v, paths
    mem_path = paths.get("memory")
    cpu_path = paths.get("cpu")
    mem_v = cpu_v = None
    if mem_path is not None:
        mem_v = int(open("/sys/fs/cgroup/memory%s/memory.limit_in_bytes" % mem_path).read())
    if cpu_path is not None:
        for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
            if os.path.exists(root + cpu_path + "/cpu.cfs_quota_us"):
                q = int(open(root + cpu_path + "/cpu.cfs_quota_us").read())
                p = int(open(root + cpu_path + "/cpu.cfs_period_us").read())
                cpu_v = None if q < 0 else q / p
                break
    return mem_v, cpu_v, paths


def new_run_id():
    return uuid.uuid4().hex[:6]
