#!/usr/bin/env python3
"""corral benchmark runner.

    python3 benches/run.py            # full run  -> bench-results/latest.json
    python3 benches/run.py --short    # CI sizes  -> bench-results/short.json
    python3 benches/run.py --only startup,build   # a subset (for debugging)

Figures (see docs/performance.md for the method and the goals):
  startup    process start -> service up in os-services AND resource provider in Placement
             (corral vs Python nova-compute with the fake driver), cold, new host each run
  build      compute side: build_and_run_instance received -> final Instance save,
             from both computes' own debug logs (cached image)
  api_boot   POST /servers -> ACTIVE through nova-api, pinned to each host
  lifecycle  stop, start, reboot (soft), pause, unpause, delete: time to target state
  burst      N servers in one request (min_count) on corral: time until all ACTIVE
  density    Nova servers on one corral host up to 500: daemon RSS, cgroup memory per
             container, helper processes, CPU of the periodic passes
  floor      bare `runc create/start/delete --force` of a corral bundle; crun where it works
  lxd        standalone corral daemon vs LXD (dir pool): launch, launch+delete,
             start/stop, exec, 20 launches sequential and 4 at a time, RSS, helpers
  portboot   POST /servers -> ACTIVE with one port on a Neutron network, on a host named as
             the stack's Neutron agents (ML2 binds the port as ovs): corral (plugs it, waits
             for network-vif-plugged) vs nova-compute's fake driver (plugs nothing, waits
             for nothing); report only
  vifplug    the compute-side cost of plugging (and unplugging) one virtual interface:
             Linux bridge, OVS and os-vif's hybrid plug (examples/vif_plug.rs; OVS kinds
             where ovsdb answers)
  snapshotpause  standalone `corral snapshot create` of a running instance that writes a
             counter every 10 ms: the freeze-to-thaw pause the daemon logs and returns
             (pause_ms), with a small root and after 100 MB written into it
  snapshotimage  Nova createImage of a corral server through the bench's stack: POST ->
             Glance image active, against what was written into its root (10/100/300 MB)

Runs are alternated between the two systems (A, B, A, B...) so that drift and the noise
of a shared machine hit both. Nothing is hard-coded: every figure is measured here.
Everything the runner creates (servers, flavor, image, compute services and their
resource providers, host processes, containers, LXD instances, queues, cgroups, mounts,
state directories) is removed at the end, also after an error or SIGINT/SIGTERM.
Only one run at a time per machine: a second run waits (at most CORRAL_BENCH_LOCK_WAIT
seconds, default 2700) on /run/lock/corral-bench.lock. Only the Python standard library
and `requests` are used.
"""

import argparse
import atexit
import collections
import concurrent.futures
import datetime
import fcntl
import http.client
import io
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback

try:
    import requests
except ImportError:  # pragma: no cover
    sys.exit("benches/run.py needs the 'requests' package (pip install requests)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the stack description, database access and compute-host nova.conf the Nova tests use too
sys.path.insert(0, os.path.join(ROOT, "tox-harness", "nova"))
import stacklib  # noqa: E402
BIN = os.environ.get("CORRAL_BIN", os.path.join(ROOT, "target", "release", "corral"))
VIF_PLUG_BIN = os.environ.get("CORRAL_VIF_PLUG_BIN",
                              os.path.join(ROOT, "target", "release", "examples", "vif_plug"))
STACK_BASE = stacklib.STACK_BASE
WORK_BASE = os.environ.get("CORRAL_BENCH_WORK", "/var/tmp/corral-bench")
RUN_BASE = "/run/corral-bench"
CGROUP_PARENT = "corral-bench"  # Nova hosts: /<controller>/corral-bench/<uuid>
SA_CGROUP_PARENT = "corral-bench-sa"  # the standalone daemon
FLOOR_CGROUP_PARENT = "corral-bench-floor"
LXD_SOCKET = os.environ.get("LXD_SOCKET", "/var/lib/lxd/unix.socket")
LOCK_FILE = os.environ.get("CORRAL_BENCH_LOCK", "/run/lock/corral-bench.lock")
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# 2.74: the oldest microversion with `host` in POST /servers
NOVA_HEADERS = dict(stacklib.nova_headers("2.74"), **{"Content-Type": "application/json"})
PLACEMENT_HEADERS = stacklib.placement_headers("1.14")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Sizes of each figure: full and --short.
SIZES = {
    "full": dict(startup=5, boots=20, lifecycle=5, burst=50, burst_runs=2,
                 density=[100, 250, 500, 1000], density_batch=50, periodic_interval=15, cpu_window_intervals=2,
                 floor=10, sa_rounds=10, sa_batch=20, sa_parallel=4, vifplug=50, portboot=10,
                 freshrange=5, freshrange_mb=300, snapshotpause=10, snapshotimage=[10, 100, 300],
                 snapshotimage_runs=2),
    "short": dict(startup=1, boots=2, lifecycle=1, burst=5, burst_runs=1,
                  density=[10], density_batch=10, periodic_interval=5, cpu_window_intervals=2,
                  floor=2, sa_rounds=2, sa_batch=5, sa_parallel=4, vifplug=5, portboot=2,
                  freshrange=2, freshrange_mb=16, snapshotpause=3, snapshotimage=[10], snapshotimage_runs=1),
}
FIGURES = ["startup", "build", "lifecycle", "burst", "density", "floor", "lxd", "vifplug", "portboot",
           "freshrange", "snapshotpause", "snapshotimage"]
MIN_FREE_BYTES = 2 << 30


def log(msg):
    try:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
    except (OSError, ValueError):  # stdout gone (a closed pipe): keep running, keep cleaning
        pass


# ----------------------------------------------------------------------------- statistics


def summary(values, unit="s", digits=4):
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "unit": unit, "runs": []}
    return {
        "min": round(min(vals), digits),
        "median": round(statistics.median(vals), digits),
        "max": round(max(vals), digits),
        "n": len(vals),
        "unit": unit,
        "runs": [round(v, digits) for v in vals],
    }


def ratio(a, b):
    try:
        return round(a["median"] / b["median"], 3)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


# ----------------------------------------------------------------------------- cleanup


class Cleanup:
    """A stack of undo steps, run in reverse order exactly once."""

    def __init__(self):
        self.steps = []
        self.pre = []  # run before the stack (servers go before their hosts stop)
        self.lock = threading.Lock()
        self.done = False

    def push(self, desc, fn):
        with self.lock:
            self.steps.append((desc, fn))
        return len(self.steps) - 1

    def run_now(self, desc):
        """Run (and drop) the steps named desc."""
        with self.lock:
            mine = [s for s in self.steps if s[0] == desc]
            self.steps = [s for s in self.steps if s[0] != desc]
        for desc, fn in reversed(mine):
            self._one(desc, fn)

    def _one(self, desc, fn):
        try:
            fn()
        except Exception as e:  # keep cleaning
            log(f"cleanup '{desc}' failed: {e}")

    def run_all(self):
        with self.lock:
            if self.done:
                return
            self.done = True
            steps, self.steps = self.steps, []
            pre, self.pre = self.pre, []
        if steps:
            log(f"cleanup: {len(steps)} steps")
        for fn in pre:
            self._one("pre", fn)
        for desc, fn in reversed(steps):
            self._one(desc, fn)


CLEANUP = Cleanup()


def _on_signal(signum, _frame):
    log(f"signal {signum}: cleaning up")
    CLEANUP.run_all()
    sys.exit(128 + signum)


# ----------------------------------------------------------------------------- small helpers


def wait_until(fn, timeout, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run(cmd, timeout=120, check=True, **kw):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
    return r


def proc_cpu_ticks(pid):
    """utime, stime, cutime, cstime (clock ticks) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return tuple(int(x) for x in fields[11:15])


def proc_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def timed_run(cmd, stderr=subprocess.DEVNULL, limit=60):
    """Run a command whose duration is measured. subprocess.run(timeout=...) waits by
    polling with sleeps of up to 50 ms, which would be measured too; this waits in
    waitpid and enforces the limit with a timer thread instead."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    timer = threading.Timer(limit, p.kill)
    timer.start()
    try:
        return p.wait()
    finally:
        timer.cancel()


def pid_alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


CONTROL_PLANE = {"nova-conductor": "nova-conductor: ServiceWrapper worker", "nova-scheduler":
                 "nova-scheduler: ServiceWrapper worker", "nova-api": "gunicorn: worker [nova_api_app",
                 "placement": "gunicorn: worker [placement_app", "neutron": "gunicorn: worker [neutron_app",
                 "glance": "gunicorn: worker [glance_app", "mariadb": "/usr/sbin/mariadbd", "rabbitmq": "beam.smp"}


def control_plane_cpu(compute_pid):
    """CPU seconds (own + reaped children) of the compute and each control-plane process."""
    out = {}
    for pid, ppid, comm, cmd, cg, rss in all_processes():
        for name, pat in CONTROL_PLANE.items():
            first = cmd.split()[0] if cmd else ""
            if cmd.startswith(pat) or (name == "rabbitmq" and first.endswith("/beam.smp")):
                t = proc_cpu_ticks(pid)
                out[name] = out.get(name, 0) + sum(t) / HZ
    try:
        t = proc_cpu_ticks(compute_pid)
        out["compute"] = sum(t) / HZ
        out["compute_own"] = (t[0] + t[1]) / HZ
        out["compute_children"] = (t[2] + t[3]) / HZ
    except OSError:
        pass
    return out


def proc_pss(pid):
    """Proportional set size: shared pages split between the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def all_processes():
    """[(pid, ppid, comm, cmdline, memory cgroup path, rss bytes)] for every process."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            rest = st.rsplit(")", 1)[1].split()
            ppid = int(rest[1])
            rss = int(rest[21]) * PAGE
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            cg = ""
            with open(f"/proc/{pid}/cgroup") as f:
                for line in f:
                    parts = line.strip().split(":", 2)
                    if len(parts) == 3 and (parts[1] == "memory" or (parts[1] == "" and not cg)):
                        cg = parts[2]
        except (OSError, ValueError, IndexError):
            continue
        out.append((pid, ppid, comm, cmd, cg, rss))
    return out


def helper_processes(daemon_pid, keys, inside):
    """Processes outside the instances' cgroups that serve instances: a child of the
    daemon, or a process whose command line names an instance (LXD's lxc monitor)."""
    helpers = []
    for pid, ppid, comm, cmd, cg, rss in all_processes():
        if inside(cg) or pid == daemon_pid:
            continue
        if ppid == daemon_pid or any(k in cmd for k in keys):
            helpers.append({"pid": pid, "comm": comm, "cmd": cmd[:120], "rss": rss, "pss": proc_pss(pid)})
    return helpers


def memcg_usage(path):
    try:
        with open(f"/sys/fs/cgroup/memory/{path.strip('/')}/memory.usage_in_bytes") as f:
            return int(f.read())
    except OSError:
        pass
    try:  # cgroup v2
        with open(f"/sys/fs/cgroup/{path.strip('/')}/memory.current") as f:
            return int(f.read())
    except OSError:
        return None


def remove_cgroup_tree(parent):
    """rmdir an (empty) cgroup tree under every controller."""
    for ctl in glob_dirs("/sys/fs/cgroup"):
        base = os.path.join(ctl, parent)
        if not os.path.isdir(base):
            continue
        for dirpath, dirnames, _ in sorted(os.walk(base, topdown=False), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    base = os.path.join("/sys/fs/cgroup", parent)
    if os.path.isdir(base):
        try:
            os.rmdir(base)
        except OSError:
            pass


def strip_dot(name):
    """A tar member name without its leading './' or '/'."""
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name.lstrip("/")


def glob_dirs(d):
    try:
        return [os.path.join(d, x) for x in os.listdir(d) if os.path.isdir(os.path.join(d, x))]
    except OSError:
        return []


def dir_bytes(path):
    """Disk blocks used under `path` (one filesystem; hard links once), in bytes. The
    instances' idmapped lower layers are the image's own files seen again (a bind mount
    of the same filesystem, which du would count once per instance): left out."""
    r = subprocess.run(["du", "-sx", "--block-size=1", "--exclude=*/instances/*/lower", path],
                       capture_output=True, text=True)
    try:
        return int(r.stdout.split()[0])
    except (IndexError, ValueError):
        return 0


def umount_under(prefix):
    """Unmount everything mounted at or below prefix (deepest first)."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    points = [p.replace("\\040", " ") for p in points if p == prefix or p.startswith(prefix.rstrip("/") + "/")]
    for p in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)


def sweep_runtime_root(root):
    """Delete every container left under a runtime root (bounded)."""
    if not os.path.isdir(root):
        return
    for rt in ("runc", "crun"):
        if not shutil.which(rt):
            continue
        r = subprocess.run([rt, "--root", root, "list", "-q"], capture_output=True, text=True, timeout=60)
        for cid in r.stdout.split():
            subprocess.run([rt, "--root", root, "delete", "--force", cid], capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- unix-socket HTTP


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def uhttp(sock, method, path, body=None, headers=None, timeout=120):
    c = UnixHTTPConnection(sock, timeout)
    try:
        h = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, data
    finally:
        c.close()


class LxdLikeApi:
    """The LXD-style REST API both corral and LXD serve (async operations)."""

    def __init__(self, sock, name):
        self.sock = sock
        self.name = name

    def call(self, method, path, body=None, headers=None, timeout=120):
        st, data = uhttp(self.sock, method, path, body, headers, timeout)
        if st >= 400:
            err = data.get("error") if isinstance(data, dict) else data
            raise RuntimeError(f"{self.name} {method} {path}: HTTP {st}: {err}")
        return data

    def op(self, method, path, body=None, headers=None, timeout=120):
        """Start an async operation and wait for its end."""
        data = self.call(method, path, body, headers, timeout)
        if not isinstance(data, dict) or data.get("type") != "async":
            return data
        opid = data["operation"].rsplit("/", 1)[1]
        res = self.call("GET", f"/1.0/operations/{opid}/wait?timeout={int(timeout)}", timeout=timeout + 10)
        md = res.get("metadata") or {}
        if md.get("status") != "Success":
            raise RuntimeError(f"{self.name} {method} {path}: operation {md.get('status')}: {md.get('err')}")
        return md


# ----------------------------------------------------------------------------- Nova stack access


class Stack(stacklib.Stack):
    """The stack of scripts/nova-stack.sh (stacklib.Stack) with what the runner asks of it."""

    def __init__(self):
        super().__init__(STACK_BASE)
        self.nova = self.nova_url.rstrip("/")
        self.placement = self.placement_url.rstrip("/")
        self.glance = self.glance_url.rstrip("/")
        self.s = requests.Session()
        self.s.headers.update(NOVA_HEADERS)
        self.p = requests.Session()
        self.p.headers.update(PLACEMENT_HEADERS)

    # -- nova-api
    def get(self, path, **kw):
        return self.s.get(self.nova + path, timeout=60, **kw)

    def server(self, sid):
        r = self.get(f"/servers/{sid}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()["server"]

    def boot(self, name, host, flavor, image, count=1, networks="none"):
        body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor,
                           "networks": networks, "host": host}}
        if count > 1:
            body["server"]["min_count"] = count
            body["server"]["max_count"] = count
        r = self.s.post(self.nova + "/servers", json=body, timeout=60)
        if r.status_code != 202:
            raise RuntimeError(f"POST /servers: HTTP {r.status_code}: {r.text[:400]}")
        return r.json()["server"]["id"]

    def action(self, sid, body):
        r = self.s.post(f"{self.nova}/servers/{sid}/action", json=body, timeout=60)
        if r.status_code not in (202, 200):
            raise RuntimeError(f"action {list(body)[0]}: HTTP {r.status_code}: {r.text[:300]}")

    def delete(self, sid):
        r = self.s.delete(f"{self.nova}/servers/{sid}", timeout=60)
        if r.status_code not in (204, 404):
            raise RuntimeError(f"DELETE server: HTTP {r.status_code}: {r.text[:300]}")

    def wait_status(self, sid, status, timeout=120, interval=0.02):
        """Poll GET /servers/{id} until status and task_state null; returns wall time."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.server(sid)
            if status is None and s is None:
                return time.monotonic()
            if s is not None:
                st = s.get("status")
                if st == "ERROR" and status != "ERROR":
                    fault = (s.get("fault") or {}).get("message")
                    raise RuntimeError(f"server {sid} went to ERROR: {fault}")
                if status is not None and st == status and s.get("OS-EXT-STS:task_state") is None:
                    return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {sid} not {status or 'gone'} after {timeout} s "
                                   f"(now {s and s.get('status')}/{s and s.get('OS-EXT-STS:task_state')})")
            time.sleep(interval)

    def servers_named(self, prefix, group=False):
        """Servers whose name starts with prefix; group: exactly the servers of one
        multi-create (prefix, or prefix-<n>)."""
        rx = f"^{prefix}(-[0-9]+)?$" if group else f"^{prefix}"
        r = self.get("/servers/detail", params={"name": rx, "all_tenants": "1"})
        r.raise_for_status()
        return r.json()["servers"]

    def service(self, host):
        r = self.get("/os-services", params={"binary": "nova-compute", "host": host})
        r.raise_for_status()
        svcs = r.json()["services"]
        return svcs[0] if svcs else None

    def delete_service(self, host):
        svc = self.service(host)
        if svc:
            r = self.s.delete(f"{self.nova}/os-services/{svc['id']}", timeout=60)
            if r.status_code not in (204, 404):
                raise RuntimeError(f"DELETE os-services {host}: HTTP {r.status_code}: {r.text[:300]}")
        rp = self.rp(host)
        if rp:  # nova-api normally removes it with the service
            self.p.delete(f"{self.placement}/resource_providers/{rp['uuid']}", timeout=30)

    # -- placement
    def rp(self, host):
        r = self.p.get(f"{self.placement}/resource_providers", params={"name": host}, timeout=30)
        r.raise_for_status()
        rps = r.json()["resource_providers"]
        return rps[0] if rps else None

    # -- database (read only)
    def sql(self, query, db=None):
        return self.db_query(query, db or self.db_name("nova"))

    def count_states(self, prefix):
        """{vm_state: count} of this run's live servers named prefix or prefix-<n>, read
        straight from the cell DB (the rows nova-api shows; polling nova-api's
        /servers/detail for 50-500 servers would load the control plane under test)."""
        rows = self.sql("select vm_state, count(*) from instances where deleted=0 and task_state is null and "
                        f"display_name regexp '^{prefix}(-[0-9]+)?$' group by vm_state")
        return {r[0]: int(r[1]) for r in rows if len(r) == 2}

    def live_uuids(self, uuids):
        out = set()
        uuids = list(uuids)
        for i in range(0, len(uuids), 200):
            ids = ",".join(f"'{u}'" for u in uuids[i:i + 200])
            out |= {r[0] for r in self.sql(f"select uuid from instances where deleted=0 and uuid in ({ids})") if r}
        return out

    def uuids_named(self, prefix):
        return [r[0] for r in self.sql("select uuid from instances where deleted=0 and "
                                       f"display_name regexp '^{prefix}(-[0-9]+)?$'") if r]

    def host_mapped(self, host):
        return bool(self.sql(f"select id from host_mappings where host='{host}'", db=self.db_name("nova_api")))

    # -- glance
    def upload_image(self, name, path):
        h = {"X-Auth-Token": "admin:admin", "Content-Type": "application/json"}
        r = requests.post(f"{self.glance}/v2/images", headers=h, timeout=60,
                          json={"name": name, "disk_format": "raw", "container_format": "bare",
                                "visibility": "public"})
        r.raise_for_status()
        iid = r.json()["id"]
        CLEANUP.push("glance image", lambda: requests.delete(f"{self.glance}/v2/images/{iid}", headers=h, timeout=60))
        with open(path, "rb") as f:
            r = requests.put(f"{self.glance}/v2/images/{iid}/file", data=f, timeout=300,
                             headers={"X-Auth-Token": "admin:admin", "Content-Type": "application/octet-stream"})
        r.raise_for_status()
        wait_until(lambda: requests.get(f"{self.glance}/v2/images/{iid}", headers=h, timeout=30).json()
                   .get("status") == "active", 60, 0.2, "glance image active")
        return iid

    def create_flavor(self, name, ram, vcpus=1, disk=0):
        r = self.s.post(self.nova + "/flavors", timeout=60,
                        json={"flavor": {"name": name, "ram": ram, "vcpus": vcpus, "disk": disk}})
        if r.status_code != 200:
            raise RuntimeError(f"POST /flavors: HTTP {r.status_code}: {r.text[:300]}")
        fid = r.json()["flavor"]["id"]
        CLEANUP.push("flavor", lambda: self.s.delete(f"{self.nova}/flavors/{fid}", timeout=60))
        return fid

    def delete_queues(self, pattern):
        """Remove the RabbitMQ queues of hosts this run created (compute.<host>, ...)."""
        if not shutil.which("rabbitmqctl"):
            return
        r = run(["rabbitmqctl", "-q", "list_queues", "-p", self.vhost, "name"], timeout=60, check=False)
        names = [n for n in r.stdout.split() if re.search(pattern, n)]
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda n: run(["rabbitmqctl", "-q", "delete_queue", "-p", self.vhost, n],
                                      timeout=60, check=False), names))


# ----------------------------------------------------------------------------- compute hosts


class Host:
    """One compute service process: corral or the reference nova-compute."""

    def __init__(self, stack, kind, name, work, debug=False, extra=None):
        self.stack, self.kind, self.name, self.debug = stack, kind, name, debug
        self.dir = os.path.join(work, name)
        self.extra = extra or {}
        self.conf = os.path.join(self.dir, "nova.conf")
        self.log = os.path.join(self.dir, "compute.log")
        self.runtime_root = os.path.join(RUN_BASE, name, "runc")
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)
        self._write_conf()

    def _write_conf(self):
        defaults = {"report_interval": "10"}
        if self.kind == "reference":
            defaults.update(graceful_shutdown_timeout="1", log_file=self.log)
            if self.debug:  # oslo.messaging logs the receipt of each cast at DEBUG
                defaults["default_log_levels"] = (
                    "amqp=WARN,amqplib=WARN,sqlalchemy=WARN,oslo.messaging=DEBUG,"
                    "oslo_messaging=DEBUG,iso8601=WARN,urllib3.connectionpool=WARN,"
                    "keystoneauth=WARN,stevedore=WARN,oslo_policy=INFO,oslo.privsep.daemon=INFO")
        defaults.update(self.extra)
        text = stacklib.compute_conf(self.stack, self.kind, self.name, self.dir,
                                     runtime_root=self.runtime_root, cgroup_parent=CGROUP_PARENT,
                                     debug=self.debug and self.kind == "reference", defaults=defaults)
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self):
        env = dict(os.environ)
        if self.kind == "corral":
            cmd = [BIN, "daemon", "--config-file", self.conf, "--state-dir", self.dir,
                   "--socket", os.path.join(self.dir, "corral.sock")]
            env["NO_COLOR"] = "1"
            env["CORRAL_LOG"] = "corral=debug" if self.debug else "corral=info"
        else:
            cmd = [os.path.join(self.stack.venv, "bin", "nova-compute"), "--config-file", self.conf]
        out = open(self.log if self.kind == "corral" else os.path.join(self.dir, "stdout.log"), "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                     start_new_session=True)
        out.close()
        CLEANUP.push(f"host {self.name}", self.destroy)
        return t0

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def wait_ready(self, timeout=120):
        """Service up, resource provider present, and mapped for the scheduler."""
        st = self.stack

        def ready():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {tail(self.log)}")
            svc = st.service(self.name)
            return svc and svc["state"] == "up" and st.rp(self.name) and st.host_mapped(self.name)
        wait_until(ready, timeout, 0.3, f"{self.name} ready")

    def destroy(self):
        """Stop the process, remove the service (+ node, RP, host mapping), containers, files."""
        self.stop()
        keep = os.environ.get("CORRAL_BENCH_KEEP_LOGS")
        if keep and os.path.exists(self.log):
            os.makedirs(keep, exist_ok=True)
            shutil.copy(self.log, os.path.join(keep, f"{self.name}.log"))
        try:
            self.stack.delete_service(self.name)
        except Exception as e:
            log(f"cannot delete service {self.name}: {e}")
        if self.kind == "corral":
            sweep_runtime_root(self.runtime_root)
            shutil.rmtree(os.path.dirname(self.runtime_root), ignore_errors=True)
            umount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- log parsing

CORRAL_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z?\s")
NOVA_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")


def corral_lines(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            line = ANSI.sub("", line)
            m = CORRAL_TS.match(line)
            if m:
                ts = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc)
                out.append((ts.timestamp(), line.rstrip("\n")))
    return out


def nova_lines(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = NOVA_TS.match(line)
            if m:
                ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
                out.append((time.mktime(ts.timetuple()) + ts.microsecond / 1e6, line.rstrip("\n")))
    return out


def corral_builds(path, windows):
    """Compute-side build of each (uuid, t_post, t_done) window: receipt of
    build_and_run_instance -> the call sent right after the final Instance save
    (InstanceActionEvent.event_finish; corral sends it once that save has returned)."""
    lines = corral_lines(path)
    res = {}
    for uuid, t0, t1 in windows:
        recv = [i for i, (ts, l) in enumerate(lines)
                if t0 - 0.05 <= ts <= t1 + 0.05 and "received incoming message" in l and "build_and_run_instance" in l]
        if not recv:
            continue
        i0 = recv[0]
        fan = next((i for i in range(i0, len(lines))
                    if "fanout cast" in lines[i][1] and "update_instance_info" in lines[i][1]), None)
        if fan is None:
            continue
        last_call = next((i for i in range(fan, i0, -1) if re.search(r"\bcall\b", lines[i][1])
                          and "fanout" not in lines[i][1]), fan)
        res[uuid] = lines[last_call][0] - lines[i0][0]
    return res


def nova_builds(path, windows):
    """Python nova-compute: receipt of the cast (oslo.messaging DEBUG 'received message')
    -> 'Took X seconds to build instance' (logged right after the final Instance save)."""
    lines = nova_lines(path)
    res, took = {}, {}
    for uuid, t0, t1 in windows:
        first = next((i for i, (ts, l) in enumerate(lines) if uuid in l and ts >= t0 - 1), None)
        end = next((i for i, (ts, l) in enumerate(lines)
                    if uuid in l and "seconds to build instance" in l and ts >= t0 - 1), None)
        if first is None or end is None:
            continue
        recv = next((i for i in range(first, -1, -1) if "received message" in lines[i][1]
                     and lines[i][0] >= t0 - 0.05), None)
        if recv is None:
            continue
        res[uuid] = lines[end][0] - lines[recv][0]
        m = re.search(r"Took ([0-9.]+) seconds to build instance", lines[end][1])
        if m:
            took[uuid] = float(m.group(1))
    return res, took


BUILD_STEPS = [
    "receipt -> event_start sent (decode, dispatch)",
    "InstanceActionEvent.event_start (conductor call)",
    "save vm_state=building",
    "save host/node/compute_id (the instance lands here)",
    "claim: ComputeNode usage save",
    "save task_state=networking",
    "save task_state=block_device_mapping",
    "save task_state=spawning, then spawn: image cache check, overlay root, bundle, runc create+start, state",
    "final save vm_state=active (conductor call)",
    "event_finish (conductor call) -> update_instance_info fanout",
]


def corral_build_steps(path, windows):
    """Per build, the time between consecutive log lines of the build (see BUILD_STEPS);
    builds with a foreign call in between (heartbeat, periodic task) are left out."""
    lines = corral_lines(path)
    out = []
    for uuid, t0, t1 in windows:
        i0 = next((i for i, (ts, l) in enumerate(lines) if t0 - 0.05 <= ts <= t1 + 0.05
                   and "received incoming message" in l and "build_and_run_instance" in l), None)
        if i0 is None:
            continue
        seq = [lines[i0][0]]
        for ts, l in lines[i0 + 1:]:
            if "fanout cast" in l and "update_instance_info" in l:
                seq.append(ts)
                break
            if "rpc::client: call " in l:
                seq.append(ts)
        if len(seq) == len(BUILD_STEPS) + 1:
            out.append([(b - a) * 1000 for a, b in zip(seq, seq[1:])])
    return out


def corral_build_breakdown(path, t0, t1):
    """Every line of one build (receipt .. fanout), with offsets from the receipt."""
    lines = corral_lines(path)
    i0 = next((i for i, (ts, l) in enumerate(lines)
               if t0 - 0.05 <= ts <= t1 + 0.05 and "received incoming message" in l
               and "build_and_run_instance" in l), None)
    if i0 is None:
        return []
    out = []
    for ts, l in lines[i0:]:
        out.append((round((ts - lines[i0][0]) * 1000, 2), l.split(None, 1)[1][:220]))
        if "fanout cast" in l and "update_instance_info" in l:
            break
    return out


def stat_birth(path):
    """Birth (or modification) time of a file, ns precision, as epoch seconds."""
    r = subprocess.run(["stat", "-c", "%W %.9Y", path], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    w, y = r.stdout.split()
    return float(y) if w == "0" else float(subprocess.run(["stat", "-c", "%.9W", path], capture_output=True,
                                                          text=True).stdout.strip() or y)


# ----------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, short, only, out=None):
        self.short = short
        self.sz = SIZES["short" if short else "full"]
        self.only = only
        self.tag = "cb" + secrets.token_hex(3)
        self.work = os.path.join(WORK_BASE, self.tag)
        os.makedirs(self.work, exist_ok=True)
        CLEANUP.push("workdir", lambda: (umount_under(self.work), shutil.rmtree(self.work, ignore_errors=True)))
        self.out = out or os.path.join(ROOT, "bench-results", "short.json" if short else "latest.json")
        self.results = {"meta": {}, "errors": {}}
        self.stack = None
        self.flavor = self.image = None
        self.tarball = None
        self.t_start = time.monotonic()

    def want(self, fig):
        return not self.only or fig in self.only

    def save(self):
        self.results["meta"]["elapsed_s"] = round(time.monotonic() - self.t_start, 1)
        os.makedirs(os.path.dirname(self.out), exist_ok=True)
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, self.out)

    def figure(self, name, fn):
        if not self.want(name):
            return
        log(f"=== {name}")
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:
            log(f"{name} failed: {e}")
            try:
                traceback.print_exc()
            except (OSError, ValueError):
                pass
            self.results["errors"][name] = f"{type(e).__name__}: {e}"
        self.results["meta"].setdefault("figure_seconds", {})[name] = round(time.monotonic() - t0, 1)
        self.save()

    # ------------------------------------------------------------------ setup

    def meta(self):
        m = self.results["meta"]
        m["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        m["mode"] = "short" if self.short else "full"
        m["sizes"] = self.sz
        m["tag"] = self.tag
        m["machine"] = {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "mem_total_bytes": os.sysconf("SC_PHYS_PAGES") * PAGE,
                        "loadavg_at_start": os.getloadavg()}
        try:
            with open("/etc/os-release") as f:
                m["machine"]["os"] = next((ln.split("=", 1)[1].strip().strip('"') for ln in f
                                           if ln.startswith("PRETTY_NAME=")), "")
            with open("/proc/cpuinfo") as f:
                m["machine"]["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
        except OSError:
            pass
        m["corral_bin"] = BIN
        try:
            m["corral_bin_mtime"] = datetime.datetime.fromtimestamp(os.stat(BIN).st_mtime, datetime.timezone.utc
                                                                    ).isoformat(timespec="seconds")
        except OSError:
            pass
        m["corral_source"] = os.environ.get("CORRAL_BENCH_SOURCE", "working tree of " + ROOT)
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
        m["git_head"] = r.stdout.strip()
        r = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"], capture_output=True, text=True)
        m["src_dirty"] = bool(r.stdout.strip())
        for rt in ("runc", "crun"):
            r = subprocess.run([rt, "--version"], capture_output=True, text=True) if shutil.which(rt) else None
            m[f"{rt}_version"] = r.stdout.splitlines()[0] if r and r.stdout else None

    def build_tarball(self):
        if self.tarball:
            return self.tarball
        self.tarball = os.path.join(self.work, "busybox.tar.gz")
        run([os.path.join(ROOT, "openstack", "images", "build-busybox-rootfs.sh"), self.tarball], timeout=120)
        return self.tarball

    def ensure_stack(self):
        if self.stack:
            return self.stack
        script = os.path.join(ROOT, "scripts", "nova-stack.sh")
        ok = subprocess.run([script, "status"], capture_output=True, timeout=60).returncode == 0
        if not ok:
            log("nova stack not up: scripts/nova-stack.sh up")
            r = subprocess.run([script, "up"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=1200)
            if r.returncode != 0:
                raise RuntimeError(f"scripts/nova-stack.sh up failed: {(r.stderr or r.stdout)[-600:]}")
        self.stack = Stack()
        st = self.stack
        # Remove the RabbitMQ queues of this run's hosts at the very end.
        CLEANUP.steps.insert(0, ("queues", lambda: st.delete_queues(rf"\.{self.tag}-|^compute(-alt)?\.{self.tag}")))
        self.image = st.upload_image(f"{self.tag}-busybox", self.build_tarball())
        self.flavor = st.create_flavor(f"{self.tag}-tiny", ram=16, vcpus=1, disk=0)
        self.results["meta"]["nova"] = {"nova_url": st.nova, "vhost": st.vhost, "flavor": "1 vCPU, 16 MB, 0 GB",
                                        "image": "busybox root tarball (raw/bare)"}
        return st

    def delete_servers(self, ids, timeout=600):
        st = self.stack
        for sid in ids:
            try:
                st.delete(sid)
            except Exception as e:
                log(f"delete {sid}: {e}")
        deadline = time.monotonic() + timeout
        left = set(ids)
        while left and time.monotonic() < deadline:
            left = st.live_uuids(left)
            if left:
                time.sleep(0.25)
        if left:
            raise TimeoutError(f"{len(left)} servers not deleted after {timeout} s")

    def cleanup_servers(self):
        """Whatever server of this run is still there."""
        if not self.stack:
            return
        try:
            ids = [s["id"] for s in self.stack.servers_named(self.tag)]
            if ids:
                log(f"cleanup: deleting {len(ids)} leftover servers")
                self.delete_servers(ids, timeout=600)
        except Exception as e:
            log(f"cleanup servers: {e}")

    # ------------------------------------------------------------------ 1. start-up

    def fig_startup(self):
        st = self.ensure_stack()
        runs = {"corral": collections.defaultdict(list), "reference": collections.defaultdict(list)}
        for i in range(self.sz["startup"]):
            order = ["corral", "reference"] if i % 2 == 0 else ["reference", "corral"]
            for kind in order:
                h = Host(st, kind, f"{self.tag}-s{kind[0]}{i}", self.work)
                res = {}

                def poll_svc():
                    while "svc" not in res and time.monotonic() < deadline:
                        try:
                            s = st.service(h.name)
                            if s and s["state"] == "up":
                                res["svc"] = time.monotonic()
                        except requests.RequestException:
                            pass
                        time.sleep(0.01)

                def poll_rp():
                    while "rp" not in res and time.monotonic() < deadline:
                        try:
                            if st.rp(h.name):
                                res["rp"] = time.monotonic()
                        except requests.RequestException:
                            pass
                        time.sleep(0.01)
                t0 = h.start()
                deadline = t0 + 90
                th = [threading.Thread(target=poll_svc), threading.Thread(target=poll_rp)]
                for t in th:
                    t.start()
                for t in th:
                    t.join()
                if "svc" not in res or "rp" not in res:
                    h.destroy()
                    raise RuntimeError(f"{kind} host {h.name} not up within 90 s: {tail(h.log)}")
                runs[kind]["service_up"].append(res["svc"] - t0)
                runs[kind]["rp"].append(res["rp"] - t0)
                runs[kind]["both"].append(max(res["svc"], res["rp"]) - t0)
                log(f"startup {kind}: service {res['svc'] - t0:.3f} s, rp {res['rp'] - t0:.3f} s")
                if kind == "corral":
                    runs[kind]["rss_after_start"].append(proc_rss(h.pid) or 0)
                CLEANUP.run_now(f"host {h.name}")
        R = self.results
        for kind in runs:
            R[f"startup_{kind}_s"] = summary(runs[kind]["both"])
            R[f"startup_{kind}_service_up_s"] = summary(runs[kind]["service_up"])
            R[f"startup_{kind}_rp_s"] = summary(runs[kind]["rp"])
        R["startup_corral_rss_bytes"] = summary(runs["corral"]["rss_after_start"], "bytes", 0)
        R["ratio_startup"] = ratio(R["startup_corral_s"], R["startup_reference_s"])

    # ------------------------------------------------------------------ 2-5. Nova hosts

    def main_hosts(self):
        st = self.ensure_stack()
        if getattr(self, "hosts", None):
            return self.hosts
        c = Host(st, "corral", f"{self.tag}-corral", self.work, debug=True,
                 extra={"cpu_allocation_ratio": "64", "ram_allocation_ratio": "16"})
        r = Host(st, "reference", f"{self.tag}-ref", self.work, debug=True,
                 extra={"cpu_allocation_ratio": "64", "ram_allocation_ratio": "16"})
        c.start()
        r.start()
        c.wait_ready()
        r.wait_ready()
        self.hosts = {"corral": c, "reference": r}
        # Warm-up: one boot each (corral downloads the image into its cache here).
        for kind, h in self.hosts.items():
            sid = st.boot(f"{self.tag}-warm-{kind}", h.name, self.flavor, self.image)
            st.wait_status(sid, "ACTIVE", 180)
            self.delete_servers([sid], 120)
        return self.hosts

    def stop_main_hosts(self):
        if getattr(self, "hosts", None):
            self.cleanup_servers()
            for h in self.hosts.values():
                CLEANUP.run_now(f"host {h.name}")
            self.hosts = None

    def fig_build(self):
        st = self.ensure_stack()
        hosts = self.main_hosts()
        api = {"corral": [], "reference": []}
        windows = {"corral": [], "reference": []}
        deletes = {"corral": [], "reference": []}
        for i in range(self.sz["boots"]):
            order = ["corral", "reference"] if i % 2 == 0 else ["reference", "corral"]
            for kind in order:
                h = hosts[kind]
                w0 = time.time()
                t0 = time.monotonic()
                sid = st.boot(f"{self.tag}-b{i}-{kind}", h.name, self.flavor, self.image)
                t1 = st.wait_status(sid, "ACTIVE", 120)
                api[kind].append(t1 - t0)
                windows[kind].append((sid, w0, time.time()))
                t2 = time.monotonic()
                st.delete(sid)
                deletes[kind].append(st.wait_status(sid, None, 120) - t2)
            log(f"boot {i}: corral {api['corral'][-1]:.3f} s, reference {api['reference'][-1]:.3f} s")
        time.sleep(0.5)  # let the logs flush
        cb = corral_builds(hosts["corral"].log, windows["corral"])
        nb, took = nova_builds(hosts["reference"].log, windows["reference"])
        R = self.results
        R["build_compute_corral_s"] = summary([cb[u] for u, _, _ in windows["corral"] if u in cb])
        R["build_compute_reference_s"] = summary([nb[u] for u, _, _ in windows["reference"] if u in nb])
        R["build_reference_took_log_s"] = summary(list(took.values()))
        R["ratio_build"] = ratio(R["build_compute_corral_s"], R["build_compute_reference_s"])
        R["api_boot_corral_s"] = summary(api["corral"])
        R["api_boot_reference_s"] = summary(api["reference"])
        R["ratio_api_boot"] = ratio(R["api_boot_corral_s"], R["api_boot_reference_s"])
        R["api_delete_corral_s"] = summary(deletes["corral"])
        R["api_delete_reference_s"] = summary(deletes["reference"])
        # Cross-check from the nova DB: instance_actions_events has whole seconds only;
        # the mean of the truncated differences still estimates the mean duration.
        for kind in ("corral", "reference"):
            ids = ",".join(f"'{u}'" for u, _, _ in windows[kind])
            if not ids:
                continue
            rows = st.sql("select timestampdiff(second, e.start_time, e.finish_time) from instance_actions_events e "
                          "join instance_actions a on e.action_id=a.id where e.event='compute__do_build_and_run_instance'"
                          f" and a.instance_uuid in ({ids})")
            vals = [float(r[0]) for r in rows if r and r[0] not in ("NULL", "")]
            R[f"build_db_event_mean_{kind}_s"] = round(statistics.mean(vals), 3) if vals else None
        steps = corral_build_steps(hosts["corral"].log, windows["corral"])
        if steps:
            R["build_steps_corral_ms"] = {
                "builds": len(steps),
                "steps": [{"step": name, "median_ms": round(statistics.median(col), 1),
                           "min_ms": round(min(col), 1), "max_ms": round(max(col), 1)}
                          for name, col in zip(BUILD_STEPS, zip(*steps))]}
        # One corral build, step by step: its debug log plus the instance's file times.
        self.build_breakdown(hosts["corral"])

    def build_breakdown(self, h):
        st = self.stack
        w0 = time.time()
        sid = st.boot(f"{self.tag}-bd", h.name, self.flavor, self.image)
        st.wait_status(sid, "ACTIVE", 120)
        w1 = time.time()
        time.sleep(0.3)
        steps = corral_build_breakdown(h.log, w0, w1)
        d = os.path.join(h.dir, "instances", sid)
        t_recv = None
        for ts, l in corral_lines(h.log):
            if w0 - 0.05 <= ts <= w1 and "received incoming message" in l and "build_and_run_instance" in l:
                t_recv = ts
                break
        files = {}
        if t_recv:
            for name, path in [("instance dir", d), ("upper (overlay root)", os.path.join(d, "upper")),
                               ("config.json (bundle)", os.path.join(d, "config.json")),
                               ("runtime state (runc create)", os.path.join(h.runtime_root, sid, "state.json")),
                               ("init.pid (init started)", os.path.join(d, "init.pid")),
                               ("console.log first write", os.path.join(d, "console.log"))]:
                t = stat_birth(path)
                if t:
                    files[name] = round((t - t_recv) * 1000, 2)
        self.results["build_breakdown_corral"] = {"log_ms": steps, "files_ms": files}
        self.delete_servers([sid], 120)

    def fig_lifecycle(self):
        st = self.ensure_stack()
        hosts = self.main_hosts()
        ops = [("stop", {"os-stop": None}, "SHUTOFF"), ("start", {"os-start": None}, "ACTIVE"),
               ("reboot", {"reboot": {"type": "SOFT"}}, "ACTIVE"), ("pause", {"pause": None}, "PAUSED"),
               ("unpause", {"unpause": None}, "ACTIVE"), ("delete", None, None)]
        res = {k: collections.defaultdict(list) for k in hosts}
        for i in range(self.sz["lifecycle"]):
            order = ["corral", "reference"] if i % 2 == 0 else ["reference", "corral"]
            sids = {k: st.boot(f"{self.tag}-lc{i}-{k}", hosts[k].name, self.flavor, self.image) for k in order}
            for k in order:
                st.wait_status(sids[k], "ACTIVE", 120)
            for name, body, target in ops:
                for k in order:
                    t0 = time.monotonic()
                    if body is None:
                        st.delete(sids[k])
                    else:
                        st.action(sids[k], body)
                    t1 = st.wait_status(sids[k], target, 180)
                    res[k][name].append(t1 - t0)
            log("lifecycle %d: " % i + ", ".join(f"{n} {res['corral'][n][-1]:.2f}/{res['reference'][n][-1]:.2f}"
                                                 for n, _, _ in ops))
        R = self.results
        for name, _, _ in ops:
            R[f"lifecycle_{name}_corral_s"] = summary(res["corral"][name])
            R[f"lifecycle_{name}_reference_s"] = summary(res["reference"][name])
            R[f"ratio_lifecycle_{name}"] = ratio(R[f"lifecycle_{name}_corral_s"], R[f"lifecycle_{name}_reference_s"])

    def burst_once(self, h, n, label):
        st = self.stack
        prefix = f"{self.tag}-{label}"
        cpu0 = control_plane_cpu(h.pid)
        w0 = time.time()
        t0 = time.monotonic()
        st.boot(prefix, h.name, self.flavor, self.image, count=n)
        deadline = t0 + max(120, 6 * n)
        while True:
            states = st.count_states(prefix)
            if states.get("error"):
                srv = st.servers_named(prefix, group=True)
                err = [s for s in srv if s["status"] == "ERROR"]
                raise RuntimeError(f"{len(err)} burst servers in ERROR: "
                                   f"{((err or [{}])[0].get('fault') or {}).get('message')}")
            if states.get("active", 0) == n:
                t1 = time.monotonic()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"burst: {states} of {n} after {deadline - t0:.0f} s")
            time.sleep(0.05)
        w1 = time.time()
        cpu1 = control_plane_cpu(h.pid)
        ids = st.uuids_named(prefix)
        compute_side = None
        if h.kind == "corral":
            lines = corral_lines(h.log)
            recv = [ts for ts, l in lines if w0 <= ts <= w1 + 0.1 and "received incoming message" in l
                    and "build_and_run_instance" in l]
            done = [ts for ts, l in lines if w0 <= ts <= w1 + 0.1 and "fanout cast" in l and "update_instance_info" in l]
            if recv and done:
                compute_side = max(done) - min(recv)
        cpu = {k: round((cpu1[k] - cpu0[k]) / n, 4) for k in cpu1 if k in cpu0}
        td = time.monotonic()
        self.delete_servers(ids, timeout=max(300, 6 * n))
        return t1 - t0, compute_side, time.monotonic() - td, cpu

    def fig_burst(self):
        self.ensure_stack()
        hosts = self.main_hosts()
        n = self.sz["burst"]
        res = {k: collections.defaultdict(list) for k in hosts}
        for i in range(self.sz["burst_runs"]):
            order = ["corral", "reference"] if i % 2 == 0 else ["reference", "corral"]
            for k in order:
                total, cs, dele, cpu = self.burst_once(hosts[k], n, f"burst{i}-{k}")
                res[k]["cpu_per_build"].append(cpu)
                res[k]["total"].append(total)
                res[k]["rate"].append(n / total)
                if cs:
                    res[k]["compute"].append(n / cs)
                res[k]["delete"].append(dele)
                log(f"burst {k}: {n} ACTIVE in {total:.2f} s ({n / total:.1f}/s), delete {dele:.1f} s")
        R = self.results
        R["burst_count"] = n
        for k in hosts:
            R[f"burst_{k}_all_active_s"] = summary(res[k]["total"])
            R[f"burst_{k}_builds_per_s"] = summary(res[k]["rate"], "1/s", 2)
            R[f"burst_{k}_delete_all_s"] = summary(res[k]["delete"])
        R["burst_corral_compute_side_builds_per_s"] = summary(res["corral"]["compute"], "1/s", 2)
        for k in hosts:  # CPU seconds each process spent per build during the burst
            R[f"burst_{k}_cpu_s_per_build"] = res[k]["cpu_per_build"]
        R["ratio_burst"] = ratio(R["burst_corral_all_active_s"], R["burst_reference_all_active_s"])

    # ------------------------------------------------------------------ 6. density

    def fig_density(self):
        st = self.ensure_stack()
        self.stop_main_hosts()  # one corral host alone from here
        # Both periodic tasks every `periodic_interval` s; the interval must stay longer
        # than a pass takes, or passes queue up and the CPU per interval saturates.
        interval = self.sz["periodic_interval"]
        h = Host(st, "corral", f"{self.tag}-dense", self.work, debug=False,
                 extra={"cpu_allocation_ratio": "1024", "ram_allocation_ratio": "64",
                        "update_resources_interval": str(interval),
                        "sync_power_state_interval": str(interval),
                        "max_concurrent_builds": "10"})
        h.start()
        h.wait_ready()
        # Cache the image first: concurrent first builds of an uncached image can fail
        # ("image alias glance/<id> already exists", seen with corral at c574984).
        sid = st.boot(f"{self.tag}-dwarm", h.name, self.flavor, self.image)
        st.wait_status(sid, "ACTIVE", 180)
        self.delete_servers([sid], 120)
        pid = h.pid
        win = self.sz["cpu_window_intervals"] * interval

        def cpu_window():
            time.sleep(1)
            a, t0 = proc_cpu_ticks(pid), time.monotonic()
            time.sleep(win)
            b, t1 = proc_cpu_ticks(pid), time.monotonic()
            passes = (t1 - t0) / interval
            own = ((b[0] + b[1]) - (a[0] + a[1])) / HZ / passes
            kids = ((b[2] + b[3]) - (a[2] + a[3])) / HZ / passes
            return own, kids

        base_own, base_kids = cpu_window()
        R = self.results
        dens = {"baseline_cpu_per_interval_s": {"own": round(base_own, 4), "children": round(base_kids, 4)},
                "baseline_daemon_rss_bytes": proc_rss(pid), "baseline_daemon_rss_anon_bytes": proc_status(pid, "RssAnon"),
                "interval_s": interval, "window_s": win, "checkpoints": {}}
        R["density"] = dens
        ids = []
        stop_reason = None
        batch = 0
        t_fill0 = time.monotonic()
        for target in self.sz["density"]:
            while len(ids) < target:
                if mem_available() < MIN_FREE_BYTES:
                    stop_reason = f"MemAvailable below 2 GiB at {len(ids)} instances"
                    break
                n = min(self.sz["density_batch"], target - len(ids))
                prefix = f"{self.tag}-d{batch}"
                batch += 1
                st.boot(prefix, h.name, self.flavor, self.image, count=n)
                deadline = time.monotonic() + max(180, 8 * n)
                while True:
                    states = st.count_states(prefix)
                    if states.get("active", 0) + states.get("error", 0) == n:
                        break
                    if time.monotonic() > deadline:
                        stop_reason = f"batch not ACTIVE within the deadline at {len(ids)} instances: {states}"
                        break
                    time.sleep(0.25)
                ids += st.uuids_named(prefix)
                if states.get("error"):
                    err = [s for s in st.servers_named(prefix, group=True) if s["status"] == "ERROR"]
                    stop_reason = (f"{states['error']} servers ERROR at {len(ids)}: "
                                   f"{((err or [{}])[0].get('fault') or {}).get('message')}")
                if stop_reason:
                    break
            if stop_reason:
                log(f"density stops: {stop_reason}")
            n_now = sum(st.count_states(f"{self.tag}-d[0-9]+").get(k, 0) for k in ("active",))
            time.sleep(2)
            own, kids = cpu_window()
            uuids = [u for u in ids]
            mem = [memcg_usage(f"{CGROUP_PARENT}/{u}") for u in uuids]
            mem = [m for m in mem if m is not None]
            helpers = helper_processes(pid, uuids, lambda cg: cg.startswith(f"/{CGROUP_PARENT}/"))
            cp = {
                "instances": n_now,
                "fill_elapsed_s": round(time.monotonic() - t_fill0, 1),
                "daemon_rss_bytes": proc_rss(pid),
                "daemon_pss_bytes": proc_pss(pid),
                "daemon_rss_anon_bytes": proc_status(pid, "RssAnon"),
                "daemon_rss_file_bytes": proc_status(pid, "RssFile"),
                "container_memory_total_bytes": sum(mem),
                "container_memory_per_instance_bytes": int(sum(mem) / len(mem)) if mem else None,
                "helper_processes": len(helpers),
                "helper_max_rss_bytes": max((x["rss"] for x in helpers), default=0),
                "helpers": helpers[:5],
                "periodic_cpu_per_interval_s": {"own": round(own, 4), "children": round(kids, 4)},
                "pass_cpu_s": round(own + kids - base_own - base_kids, 4),
                "pass_cpu_children_s": round(kids - base_kids, 4),
                "pass_cpu_own_s": round(own - base_own, 4),
                "mem_available_bytes": mem_available(),
                # a pass longer than the interval makes the figure a lower bound
                "saturated": own + kids > 0.8 * interval,
            }
            dens["checkpoints"][str(n_now)] = cp
            log(f"density {n_now}: rss {cp['daemon_rss_bytes'] / 2**20:.1f} MiB, "
                f"{(cp['container_memory_per_instance_bytes'] or 0) / 2**20:.2f} MiB/container, "
                f"helpers {len(helpers)}, pass CPU {cp['pass_cpu_s'] * 1000:.0f} ms "
                f"(own {cp['pass_cpu_own_s'] * 1000:.0f} ms)")
            self.save()
            if stop_reason:
                break
        dens["stop_reason"] = stop_reason
        last = dens["checkpoints"][max(dens["checkpoints"], key=int)] if dens["checkpoints"] else {}
        R["density_max_instances"] = last.get("instances")
        R["density_daemon_rss_bytes"] = summary([c["daemon_rss_bytes"] for c in dens["checkpoints"].values()], "bytes", 0)
        R["density_container_memory_bytes"] = summary(
            [c["container_memory_per_instance_bytes"] for c in dens["checkpoints"].values()], "bytes", 0)
        R["density_pass_cpu_s"] = summary([c["pass_cpu_s"] for c in dens["checkpoints"].values()])
        R["density_helper_processes"] = summary([c["helper_processes"] for c in dens["checkpoints"].values()],
                                                "count", 0)
        td = time.monotonic()
        self.delete_servers(ids, timeout=max(600, 3 * len(ids)))
        dens["delete_all_s"] = round(time.monotonic() - td, 1)
        CLEANUP.run_now(f"host {h.name}")

    # ------------------------------------------------------------------ standalone daemon

    def standalone(self, key="sa", extra=""):
        """A standalone daemon with the busybox image imported, one per `key` (the
        default one is self.sa); `extra`: more `[corral]` options."""
        if key == "sa" and getattr(self, "sa", None):
            return self.sa
        d = os.path.join(self.work, "standalone" if key == "sa" else f"standalone-{key}")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "corral.conf")
        rroot = os.path.join(RUN_BASE, f"{self.tag}-{key}", "runc")
        cgroup_parent = SA_CGROUP_PARENT if key == "sa" else f"{SA_CGROUP_PARENT}-{key}"
        # No default network: the floor is bare runc, which plugs nothing, and a bridge
        # named corralbr0 made here would outlive this run's state directory and be
        # refused (as a name in use) by the next run's daemon.
        with open(conf, "w") as f:
            f.write(f"[corral]\nruntime_root = {rroot}\ncgroup_parent = {cgroup_parent}\n"
                    f"default_network = none\n{extra}")
        sock = os.path.join(d, "corral.sock")
        logf = open(os.path.join(d, "daemon.log"), "ab")
        p = subprocess.Popen([BIN, "daemon", "--config-file", conf, "--state-dir", os.path.join(d, "state"),
                              "--socket", sock], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             env=dict(os.environ, NO_COLOR="1"), start_new_session=True)
        logf.close()
        api = LxdLikeApi(sock, "corral")

        def destroy():
            if p.poll() is not None and not os.path.exists(d):
                return  # destroyed already
            try:
                for url in api.call("GET", "/1.0/instances").get("metadata") or []:
                    api.op("DELETE", url + "?force=true", timeout=60)
            except Exception as e:
                log(f"standalone cleanup: {e}")
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
            sweep_runtime_root(rroot)
            shutil.rmtree(os.path.dirname(rroot), ignore_errors=True)
            umount_under(d)
            remove_cgroup_tree(cgroup_parent)
            shutil.rmtree(d, ignore_errors=True)
        CLEANUP.push(f"standalone {key}", destroy)
        wait_until(lambda: os.path.exists(sock) or p.poll() is not None, 30, 0.02, "corral socket")
        if p.poll() is not None:
            raise RuntimeError(f"standalone corral exited: {tail(os.path.join(d, 'daemon.log'))}")
        with open(self.build_tarball(), "rb") as f:
            api.op("POST", "/1.0/images", f.read(), {"X-Corral-Alias": "busybox",
                                                     "Content-Type": "application/octet-stream"})
        sa = {"api": api, "pid": p.pid, "dir": d, "rroot": rroot, "destroy": destroy}
        if key == "sa":
            self.sa = sa
        return sa

    # ------------------------------------------------------------------ 7. runtime floor

    def fig_floor(self):
        sa = self.standalone()
        api = sa["api"]
        name = "floor-src"
        api.op("POST", "/1.0/instances", {"name": name, "source": {"type": "image", "alias": "busybox"}, "start": True})
        uuid = api.call("GET", f"/1.0/instances/{name}")["metadata"]["uuid"]
        api.op("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True})
        src = os.path.join(sa["dir"], "state", "instances", uuid)
        with open(os.path.join(src, "config.json")) as f:
            cfg = json.load(f)
        bundle = os.path.join(self.work, "floor-bundle")
        os.makedirs(bundle, exist_ok=True)
        cfg["linux"]["cgroupsPath"] = f"/{FLOOR_CGROUP_PARENT}/{self.tag}"
        cfg["root"]["path"] = os.path.join(src, "rootfs")  # the instance's overlay root, mounted
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f)
        CLEANUP.push("floor cgroups", lambda: remove_cgroup_tree(FLOOR_CGROUP_PARENT))
        res = {}
        for rt in ("runc", "crun", "corral"):
            res[rt] = collections.defaultdict(list)
        n = self.sz["floor"]
        # The same cycle through corral's API, interleaved: its overhead above the runtime.
        self.corral_launch(f"{self.tag}-fw")  # this id range's shifted image exists from here
        self.corral_delete(f"{self.tag}-fw")
        for i in range(n):
            for rt in (("runc", "corral", "crun") if i % 2 == 0 else ("crun", "corral", "runc")):
                if rt == "corral":
                    nm = f"{self.tag}-f{i}"
                    t0 = time.monotonic()
                    self.corral_launch(nm)
                    t1 = time.monotonic()
                    self.corral_delete(nm)
                    t2 = time.monotonic()
                    res[rt]["create_start"].append(t1 - t0)
                    res[rt]["total"].append(t2 - t0)
                    continue
                if not shutil.which(rt) or res[rt].get("error"):
                    continue
                root = os.path.join(RUN_BASE, f"{self.tag}-floor-{rt}")
                CLEANUP.push(f"floor {rt}", lambda root=root: sweep_runtime_root(root))
                cid = f"floor-{i}"
                with tempfile.TemporaryFile() as err:
                    t0 = time.monotonic()
                    pidfile = os.path.join(bundle, "init.pid")
                    rc = timed_run([rt, "--root", root, "create", "--bundle", bundle, "--pid-file", pidfile, cid], err)
                    t1 = time.monotonic()
                    if rc != 0:
                        err.seek(0)
                        res[rt]["error"] = f"{rt} create: {err.read().decode(errors='replace').strip()[-300:]}"
                        subprocess.run([rt, "--root", root, "delete", "--force", cid], capture_output=True)
                        continue
                    if timed_run([rt, "--root", root, "start", cid]) != 0:
                        raise RuntimeError(f"{rt} start failed")
                    t2 = time.monotonic()
                    # kill, wait for the init to go, delete: `delete --force` on a running
                    # container would add runc's own 100 ms poll.
                    with open(pidfile) as f:
                        ipid = int(f.read().strip())
                    if timed_run([rt, "--root", root, "kill", cid, "KILL"]) != 0:
                        raise RuntimeError(f"{rt} kill failed")
                    wait_until(lambda: not pid_alive(ipid), 30, 0.001, "container init exit")
                    if timed_run([rt, "--root", root, "delete", cid]) != 0:
                        raise RuntimeError(f"{rt} delete failed")
                    t3 = time.monotonic()
                res[rt]["create"].append(t1 - t0)
                res[rt]["start"].append(t2 - t1)
                res[rt]["delete"].append(t3 - t2)
                res[rt]["total"].append(t3 - t0)
        api.op("DELETE", f"/1.0/instances/{name}?force=true")
        R = self.results
        for rt in ("runc", "crun"):
            if res[rt].get("total"):
                R[f"floor_{rt}_create_start_delete_s"] = summary(res[rt]["total"])
                R[f"floor_{rt}_create_start_s"] = summary([a + b for a, b in zip(res[rt]["create"], res[rt]["start"])])
                R[f"floor_{rt}_steps_s"] = {k: summary(res[rt][k]) for k in ("create", "start", "delete")}
            if res[rt].get("error"):
                R[f"floor_{rt}_error"] = res[rt]["error"]
            if not shutil.which(rt):
                R[f"floor_{rt}_error"] = f"{rt} is not installed"
        R["floor_corral_launch_delete_s"] = summary(res["corral"]["total"])
        R["floor_corral_launch_s"] = summary(res["corral"]["create_start"])
        R["ratio_floor_corral_over_runc"] = ratio(R["floor_corral_launch_delete_s"],
                                                  R.get("floor_runc_create_start_delete_s"))

    # ------------------------------------------------------------------ virtual interfaces

    def fig_vifplug(self):
        """netdev::plug and unplug of one port into a namespace of its own, per plug kind
        (the example makes and removes its bridges and namespace)."""
        if not os.access(VIF_PLUG_BIN, os.X_OK):
            raise RuntimeError(f"{VIF_PLUG_BIN} is missing: cargo build --release --example vif_plug "
                               "(or set CORRAL_VIF_PLUG_BIN)")
        out = run([VIF_PLUG_BIN, "--count", str(self.sz["vifplug"])], timeout=600)
        data = json.loads(out.stdout)
        R = self.results
        for kind in ("bridge", "ovs", "hybrid"):
            if kind not in data:
                R[f"vifplug_{kind}_error"] = "ovsdb did not answer: OVS plugs not measured"
                continue
            R[f"vifplug_{kind}_plug_s"] = summary(data[kind]["plug_s"])
            R[f"vifplug_{kind}_unplug_s"] = summary(data[kind]["unplug_s"])
            log(f"vif plug {kind}: median {R[f'vifplug_{kind}_plug_s'].get('median', 0) * 1000:.1f} ms")

    def fig_freshrange(self):
        """Launch of a big image in an id range never used before: idmapped roots
        against id-shifted copies (`idmapped_roots = off`), one daemon each, N instances
        kept running (each in a new range), and the disk each one costs."""
        mb, n = self.sz["freshrange_mb"], self.sz["freshrange"]
        work = os.path.join(self.work, "fresh")
        rootfs = os.path.join(work, "rootfs")
        os.makedirs(rootfs)
        run(["tar", "-xzf", self.build_tarball(), "-C", rootfs], timeout=120)
        with open(os.path.join(rootfs, "ballast"), "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        tarball = os.path.join(work, "big.tar")
        run(["tar", "--numeric-owner", "-C", rootfs, "-cf", tarball, "."], timeout=300)
        shutil.rmtree(rootfs)
        R = self.results
        R["freshrange_image_mb"] = mb
        for mode, extra in (("idmapped", ""), ("copy", "idmapped_roots = off\n")):
            sa = self.standalone(f"fr{mode[0]}", extra)
            api = sa["api"]
            info = api.call("GET", "/1.0")["metadata"]
            R[f"freshrange_{mode}_server"] = {k: info.get(k) for k in ("storage", "idmapped_roots")}
            with open(tarball, "rb") as f:
                api.op("POST", "/1.0/images", f.read(), {"X-Corral-Alias": "big",
                                                         "Content-Type": "application/octet-stream"},
                       timeout=600)
            state = os.path.join(sa["dir"], "state")
            before = dir_bytes(state)
            times = []
            for i in range(n):
                t0 = time.monotonic()
                api.op("POST", "/1.0/instances", {"name": f"fr-{mode}-{i}", "start": True,
                                                  "source": {"type": "image", "alias": "big"}}, timeout=600)
                times.append(time.monotonic() - t0)
            R[f"freshrange_{mode}_launch_s"] = summary(times)
            R[f"freshrange_{mode}_disk_per_instance_bytes"] = (dir_bytes(state) - before) // n
            log(f"fresh id range, {mode}: launch median {R[f'freshrange_{mode}_launch_s']['median'] * 1000:.0f} ms, "
                f"{R[f'freshrange_{mode}_disk_per_instance_bytes'] / 1e6:.1f} MB per instance")
            sa["destroy"]()
        a, b = R["freshrange_idmapped_launch_s"]["median"], R["freshrange_copy_launch_s"]["median"]
        R["ratio_freshrange"] = round(a / b, 3) if b else None
        shutil.rmtree(work, ignore_errors=True)

    def fig_snapshotpause(self):
        """`corral snapshot create` of a running instance whose init writes a counter
        every 10 ms: the pause (freeze to thaw) the daemon returns as pause_ms, with the
        root as launched and after 100 MB written into it; the counter is checked to go
        on after each snapshot (the init is never stopped)."""
        sa = self.standalone()
        api = sa["api"]
        n = self.sz["snapshotpause"]
        # Renamed into place: a reader never sees it half written.
        loop = "i=0; while :; do i=$((i+1)); echo $i > /counter.tmp; mv /counter.tmp /counter; sleep 0.01; done"
        api.op("POST", "/1.0/instances", {"name": "snp", "start": True, "command": ["/bin/sh", "-c", loop],
                                          "source": {"type": "image", "alias": "busybox"}}, timeout=120)

        def counter():
            r = api.call("POST", "/1.0/instances/snp/exec", {"command": ["cat", "/counter"]})
            return int((r.get("metadata") or {}).get("stdout", "0").strip() or 0)
        R = self.results
        for label, ballast_mb in (("small", 0), ("100mb", 100)):
            if ballast_mb:
                api.call("POST", "/1.0/instances/snp/exec",
                         {"command": ["sh", "-c", f"head -c {ballast_mb << 20} /dev/urandom > /ballast; sync"],
                          "timeout": 120}, timeout=180)
            pauses, walls = [], []
            for i in range(n):
                before = counter()
                t0 = time.monotonic()
                md = api.op("POST", "/1.0/instances/snp/snapshots", {"name": f"{label}{i}"}, timeout=300)
                walls.append(time.monotonic() - t0)
                pauses.append(float((md.get("metadata") or {})["pause_ms"]))
                time.sleep(0.05)
                after = counter()
                if after <= before:
                    raise RuntimeError(f"the counter stopped across snapshot {label}{i}: {before} -> {after}")
                api.op("DELETE", f"/1.0/instances/snp/snapshots/{label}{i}", timeout=120)
            R[f"snapshotpause_{label}_pause_ms"] = summary(pauses, "ms", 2)
            R[f"snapshotpause_{label}_create_s"] = summary(walls)
            log(f"snapshot pause, {label} root: median {R[f'snapshotpause_{label}_pause_ms']['median']:.1f} ms "
                f"(max {max(pauses):.1f}), create {R[f'snapshotpause_{label}_create_s']['median'] * 1000:.0f} ms")
        api.op("DELETE", "/1.0/instances/snp?force=true", timeout=120)

    def fig_snapshotimage(self):
        """Nova createImage of a server on a corral host of its own: POST createImage ->
        the Glance image active (the root tarball streamed to Glance), with 10, 100 and
        300 MB of random data written into the server's root (reported, never asserted)."""
        st = self.ensure_stack()
        h = Host(st, "corral", f"{self.tag}-snapimg", self.work)
        h.start()
        h.wait_ready()
        sid = st.boot(f"{self.tag}-snapimg", h.name, self.flavor, self.image)
        st.wait_status(sid, "ACTIVE", 180)
        gh = {"X-Auth-Token": "admin:admin"}

        def glance_image(iid):
            r = requests.get(f"{st.glance}/v2/images/{iid}", headers=gh, timeout=30)
            return r.json() if r.status_code == 200 else None
        R = self.results
        R["snapshotimage_sizes_mb"] = self.sz["snapshotimage"]
        for mb in self.sz["snapshotimage"]:
            run(["runc", "--root", h.runtime_root, "exec", sid, "sh", "-c",
                 f"rm -f /ballast; head -c {mb << 20} /dev/urandom > /ballast; sync"], timeout=300)
            times, sizes = [], []
            for i in range(self.sz["snapshotimage_runs"]):
                t0 = time.monotonic()
                r = st.s.post(f"{st.nova}/servers/{sid}/action", timeout=60,
                              json={"createImage": {"name": f"{self.tag}-snap-{mb}-{i}"}})
                if r.status_code != 202:
                    raise RuntimeError(f"createImage: HTTP {r.status_code}: {r.text[:300]}")
                iid = r.json()["image_id"]
                CLEANUP.push(f"glance image {iid}",
                             lambda iid=iid: requests.delete(f"{st.glance}/v2/images/{iid}", headers=gh, timeout=60))

                def active():
                    img = glance_image(iid)
                    if img and img.get("status") in ("killed", "deleted"):
                        raise RuntimeError(f"snapshot image {iid} {img.get('status')}")
                    return img if img and img.get("status") == "active" else None
                wait_until(active, 600, 0.05, f"snapshot image of {mb} MB active")
                times.append(time.monotonic() - t0)
                sizes.append(glance_image(iid).get("size"))
                st.wait_status(sid, "ACTIVE", 120)
                CLEANUP.run_now(f"glance image {iid}")
            R[f"snapshotimage_{mb}mb_s"] = summary(times)
            R[f"snapshotimage_{mb}mb_image_bytes"] = max(sizes)
            R[f"snapshotimage_{mb}mb_mb_per_s"] = round(max(sizes) / 1e6 / R[f"snapshotimage_{mb}mb_s"]["median"], 1)
            log(f"snapshot image, {mb} MB in the root: median {R[f'snapshotimage_{mb}mb_s']['median']:.2f} s "
                f"({max(sizes) / 1e6:.0f} MB image, {R[f'snapshotimage_{mb}mb_mb_per_s']} MB/s)")
        self.delete_servers([sid], 120)
        CLEANUP.run_now(f"host {h.name}")

    def fig_portboot(self):
        """POST /servers -> ACTIVE with one port, corral vs the reference nova-compute.

        Only a host named as the stack's OVS and DHCP agents (stack.json
        `neutron_agent_host`) gets its ports bound (vif_type ovs), and only one such host
        can run at a time: each kind boots its servers in turn on a host of that name, made
        for this figure and removed after it. corral plugs the port into the agents'
        bridge and starts the container once Neutron reports network-vif-plugged; the
        fake driver plugs nothing and waits for nothing, so the figure is what a real
        port costs corral next to nova-compute's bookkeeping alone. Report only."""
        st = self.ensure_stack()
        name = getattr(st, "neutron_agent_host", None)
        if not name:
            raise RuntimeError("the stack runs no Neutron agents (stack.json has no neutron_agent_host)")
        neutron = requests.Session()
        neutron.headers.update({"Accept": "application/json", "X-Auth-Token": "admin"})
        nurl = st.neutron_url.rstrip("/")
        r = neutron.post(f"{nurl}/v2.0/networks", json={"network": {
            "name": f"{self.tag}-net", "project_id": "admin"}}, timeout=60)
        r.raise_for_status()
        net = r.json()["network"]["id"]

        def drop_network():
            ports = neutron.get(f"{nurl}/v2.0/ports", params={"network_id": net}, timeout=60)
            for p in ports.json().get("ports", []) if ports.ok else []:
                neutron.delete(f"{nurl}/v2.0/ports/{p['id']}", timeout=60)
            neutron.delete(f"{nurl}/v2.0/networks/{net}", timeout=60)
        CLEANUP.push(f"network {net}", drop_network)
        r = neutron.post(f"{nurl}/v2.0/subnets", json={"subnet": {
            "network_id": net, "cidr": "10.239.%d.0/24" % (os.getpid() % 256), "ip_version": 4,
            "project_id": "admin"}}, timeout=60)
        r.raise_for_status()
        R = self.results
        # corral_nowait: corral with vif_plugging_timeout = 0 (nova's "do not wait for
        # network-vif-plugged"), the same work as corral less the agents' reaction time:
        # what corral itself adds next to the reference.
        nowait = {"vif_plugging_timeout": "0", "vif_plugging_is_fatal": "false"}
        for label in ("corral", "corral_nowait", "reference"):
            kind = "reference" if label == "reference" else "corral"
            h = Host(st, kind, name, os.path.join(self.work, label), extra=nowait if label == "corral_nowait" else None)
            h.start()
            h.wait_ready()
            took = []
            for i in range(self.sz["portboot"] + 1):  # the first one warms the image cache
                t0 = time.monotonic()
                sid = st.boot(f"{self.tag}-pb{i}-{label}", name, self.flavor, self.image,
                              networks=[{"uuid": net}])
                t1 = st.wait_status(sid, "ACTIVE", 180)
                if i:
                    took.append(t1 - t0)
                self.delete_servers([sid], 120)
            CLEANUP.run_now(f"host {h.name}")
            R[f"portboot_{label}_s"] = summary(took)
            log(f"boot with a port, {label}: median {R[f'portboot_{label}_s'].get('median', 0):.3f} s")
        R["ratio_portboot"] = ratio(R["portboot_corral_s"], R["portboot_reference_s"])
        R["ratio_portboot_nowait"] = ratio(R["portboot_corral_nowait_s"], R["portboot_reference_s"])

    # ------------------------------------------------------------------ 8. standalone vs LXD

    def lxd(self):
        """An LXD API with the busybox image, or raise with the reason."""
        if getattr(self, "_lxd", None):
            return self._lxd
        if not shutil.which("lxd"):
            if os.geteuid() == 0 and shutil.which("apt-get") and os.environ.get("CORRAL_BENCH_NO_INSTALL") != "1":
                log("installing lxd (apt-get install -y lxd)")
                r = subprocess.run(["apt-get", "install", "-y", "lxd"], capture_output=True, text=True, timeout=600,
                                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
                if r.returncode != 0:
                    raise RuntimeError(f"apt-get install lxd failed: {r.stderr[-300:]}")
            else:
                raise RuntimeError("lxd is not installed")
        started = False
        if not os.path.exists(LXD_SOCKET) or subprocess.run(["lxd", "waitready", "--timeout", "2"],
                                                            capture_output=True).returncode != 0:
            os.makedirs("/var/log/lxd", exist_ok=True)
            subprocess.Popen(["lxd", "--group", "lxd", "--logfile", "/var/log/lxd/lxd.log"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
            started = True
            if subprocess.run(["lxd", "waitready", "--timeout", "60"], capture_output=True).returncode != 0:
                raise RuntimeError(f"lxd did not start: {tail('/var/log/lxd/lxd.log', 5)}")
            CLEANUP.push("lxd daemon", lambda: subprocess.run(["lxd", "shutdown", "--timeout", "60"],
                                                              capture_output=True, timeout=90))
        api = LxdLikeApi(LXD_SOCKET, "lxd")
        pools = api.call("GET", "/1.0/storage-pools")["metadata"]
        if not pools:  # `lxd init --auto` wants a network; this host has none to give
            api.call("POST", "/1.0/storage-pools", {"name": "default", "driver": "dir"})
        prof = api.call("GET", "/1.0/profiles/default")["metadata"]
        if "root" not in (prof.get("devices") or {}):
            pool = api.call("GET", "/1.0/storage-pools")["metadata"][0].rsplit("/", 1)[1]
            prof["devices"] = dict(prof.get("devices") or {}, root={"type": "disk", "path": "/", "pool": pool})
            api.call("PUT", "/1.0/profiles/default", {"config": prof.get("config", {}), "description":
                                                      prof.get("description", ""), "devices": prof["devices"]})
        # The same busybox root as a unified LXD image: metadata.yaml + rootfs/.
        img = os.path.join(self.work, "lxd-busybox.tar.gz")
        with tarfile.open(self.build_tarball()) as src, tarfile.open(img, "w:gz") as dst:
            meta = (f"architecture: {platform.machine()}\ncreation_date: {int(time.time())}\n"
                    "properties:\n  description: corral-bench busybox\n  os: busybox\n").encode()
            ti = tarfile.TarInfo("metadata.yaml")
            ti.size = len(meta)
            ti.mtime = int(time.time())
            dst.addfile(ti, io.BytesIO(meta))
            for m in src.getmembers():
                data = src.extractfile(m) if m.isfile() else None
                m.name = "rootfs/" + strip_dot(m.name) if strip_dot(m.name) else "rootfs"
                if m.islnk():
                    m.linkname = "rootfs/" + strip_dot(m.linkname)
                dst.addfile(m, data)
        alias = f"{self.tag}-busybox"
        with open(img, "rb") as f:
            md = api.op("POST", "/1.0/images", f.read(), {"Content-Type": "application/octet-stream"})
        fp = md["metadata"]["fingerprint"]
        api.call("POST", "/1.0/images/aliases", {"name": alias, "target": fp})
        CLEANUP.push("lxd image", lambda: api.op("DELETE", f"/1.0/images/{fp}"))
        ver = api.call("GET", "/1.0")["metadata"]["environment"]
        self.results["meta"]["lxd"] = {"version": ver.get("server_version"), "storage": "dir",
                                       "started_by_runner": started, "driver": ver.get("driver"),
                                       "driver_version": ver.get("driver_version")}
        self._lxd = {"api": api, "alias": alias, "names": set()}
        CLEANUP.push("lxd instances", self._lxd_cleanup)
        return self._lxd

    def _lxd_cleanup(self):
        api = self._lxd["api"]
        for name in list(self._lxd["names"]):
            try:
                self.lxd_delete(name)
            except Exception:
                pass
        for url in api.call("GET", "/1.0/instances")["metadata"]:
            name = url.rsplit("/", 1)[1]
            if name.startswith(self.tag):
                try:
                    self.lxd_delete(name)
                except Exception as e:
                    log(f"lxd cleanup {name}: {e}")

    def lxd_launch(self, name):
        lx = self._lxd
        lx["names"].add(name)
        lx["api"].op("POST", "/1.0/instances", {"name": name, "type": "container",
                                                "source": {"type": "image", "alias": lx["alias"]}})
        lx["api"].op("PUT", f"/1.0/instances/{name}/state", {"action": "start"})

    def lxd_delete(self, name):
        """What `lxc delete --force` does: a forced stop, then the delete."""
        api = self._lxd["api"]
        st = api.call("GET", f"/1.0/instances/{name}")["metadata"]["status"]
        if st != "Stopped":
            api.op("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True})
        api.op("DELETE", f"/1.0/instances/{name}")
        self._lxd["names"].discard(name)

    def corral_launch(self, name):
        self.sa["api"].op("POST", "/1.0/instances", {"name": name, "start": True,
                                                     "source": {"type": "image", "alias": "busybox"}})

    def corral_delete(self, name):
        self.sa["api"].op("DELETE", f"/1.0/instances/{name}?force=true")

    def fig_lxd(self):
        self.standalone()
        R = self.results
        try:
            self.lxd()
        except Exception as e:
            R["lxd_error"] = f"LXD unavailable: {e}"
            log(R["lxd_error"])
        have_lxd = getattr(self, "_lxd", None) is not None
        systems = {"corral": (self.corral_launch, self.corral_delete, self.sa["api"])}
        if have_lxd:
            systems["lxd"] = (self.lxd_launch, self.lxd_delete, self._lxd["api"])
        res = {k: collections.defaultdict(list) for k in systems}
        # A persistent instance each for exec and stop/start.
        for k, (launch, _, _) in systems.items():
            launch(f"{self.tag}-p{k[0]}")
        for i in range(self.sz["sa_rounds"]):
            order = list(systems) if i % 2 == 0 else list(reversed(list(systems)))
            for k in order:
                launch, delete, api = systems[k]
                name = f"{self.tag}-r{i}{k[0]}"
                t0 = time.monotonic()
                launch(name)
                t1 = time.monotonic()
                delete(name)
                t2 = time.monotonic()
                res[k]["launch"].append(t1 - t0)
                res[k]["delete"].append(t2 - t1)
                res[k]["launch_delete"].append(t2 - t0)
                p = f"{self.tag}-p{k[0]}"
                t0 = time.monotonic()
                if k == "corral":
                    out = api.call("POST", f"/1.0/instances/{p}/exec", {"command": ["true"]})
                    rc = (out.get("metadata") or {}).get("exit_code")
                else:
                    md = api.op("POST", f"/1.0/instances/{p}/exec", {"command": ["true"], "wait-for-websocket": False,
                                                                      "interactive": False, "record-output": False})
                    rc = (md.get("metadata") or {}).get("return")
                res[k]["exec"].append(time.monotonic() - t0)
                if rc != 0:
                    raise RuntimeError(f"{k} exec true returned {rc}")
                t0 = time.monotonic()
                api.op("PUT", f"/1.0/instances/{p}/state", {"action": "stop", "force": True})
                t1 = time.monotonic()
                api.op("PUT", f"/1.0/instances/{p}/state", {"action": "start"})
                t2 = time.monotonic()
                res[k]["stop"].append(t1 - t0)
                res[k]["start"].append(t2 - t1)
            log(f"standalone round {i}: " + ", ".join(
                f"{k} launch {res[k]['launch'][-1] * 1000:.0f} ms, launch+delete {res[k]['launch_delete'][-1] * 1000:.0f} ms"
                for k in systems))
        # Batches: N sequential, then N with P at a time; RSS and helpers with N running.
        # The first batch uses id ranges this daemon has not used yet (corral makes a
        # shifted copy of the image per range, once); the next two reuse them.
        n, par = self.sz["sa_batch"], self.sz["sa_parallel"]
        for bi, mode in enumerate(("sequential_cold", "parallel", "sequential")):
            for k in (list(systems) if bi % 2 == 0 else list(reversed(list(systems)))):
                launch, delete, api = systems[k]
                names = [f"{self.tag}-b{bi}x{j}{k[0]}" for j in range(n)]
                t0 = time.monotonic()
                if mode != "parallel":
                    for nm in names:
                        launch(nm)
                else:
                    with concurrent.futures.ThreadPoolExecutor(par) as ex:
                        list(ex.map(launch, names))
                el = time.monotonic() - t0
                res[k][f"batch_{mode}"].append(n / el)
                if mode == "sequential":
                    time.sleep(1)
                    self.standalone_footprint(k, names + [f"{self.tag}-p{k[0]}"], res)
                t0 = time.monotonic()
                if mode != "parallel":
                    for nm in names:
                        delete(nm)
                else:
                    with concurrent.futures.ThreadPoolExecutor(par) as ex:
                        list(ex.map(delete, names))
                res[k][f"delete_{mode}"].append(n / (time.monotonic() - t0))
                log(f"{k} {n} launches {mode}: {n / el:.1f}/s")
        for k, (_, delete, _) in systems.items():
            delete(f"{self.tag}-p{k[0]}")
        for k in systems:
            for m in ("launch", "delete", "launch_delete", "exec", "stop", "start"):
                R[f"sa_{m}_{k}_s"] = summary(res[k][m])
            for mode in ("sequential_cold", "sequential", "parallel"):
                R[f"sa_launches_per_s_{mode}_{k}"] = summary(res[k][f"batch_{mode}"], "1/s", 2)
                R[f"sa_deletes_per_s_{mode}_{k}"] = summary(res[k][f"delete_{mode}"], "1/s", 2)
            for m in ("daemon_rss", "daemon_pss", "helper_rss_per_container", "helper_pss_per_container",
                      "helper_max_rss", "memory_per_container"):
                R[f"sa_{m}_{k}_bytes"] = summary(res[k][m], "bytes", 0)
            R[f"sa_helper_processes_per_container_{k}"] = summary(res[k]["helpers_per_container"], "count", 2)
        R["sa_batch_size"] = n
        R["sa_parallel"] = par
        if have_lxd:
            for m in ("launch", "launch_delete", "exec", "stop", "start", "delete"):
                R[f"ratio_lxd_{m}"] = ratio(R[f"sa_{m}_corral_s"], R[f"sa_{m}_lxd_s"])
            R["ratio_lxd_daemon_rss"] = ratio(R["sa_daemon_rss_corral_bytes"], R["sa_daemon_rss_lxd_bytes"])
        else:
            R["ratio_lxd_launch_delete"] = None

    def standalone_footprint(self, k, names, res):
        if k == "corral":
            pid = self.sa["pid"]
            api = self.sa["api"]
            uuids = [api.call("GET", f"/1.0/instances/{nm}")["metadata"]["uuid"] for nm in names]
            keys = uuids
            mem = [memcg_usage(f"{SA_CGROUP_PARENT}/{u}") for u in uuids]
            inside = lambda cg: cg.startswith(f"/{SA_CGROUP_PARENT}/")  # noqa: E731
        else:
            pid = next((p for p, pp, comm, cmd, cg, rss in all_processes()
                        if comm == "lxd" and cmd.split()[:1] == ["lxd"] and "--group" in cmd), None)
            keys = names
            mem = [memcg_usage(f"lxc.payload.{nm}") for nm in names]
            inside = lambda cg: "lxc.payload." in cg  # noqa: E731
        helpers = helper_processes(pid, keys, inside)
        mem = [m for m in mem if m is not None]
        res[k]["daemon_rss"].append(proc_rss(pid) or 0)
        res[k]["helpers_per_container"].append(len(helpers) / len(names))
        res[k]["helper_rss_per_container"].append(sum(h["rss"] for h in helpers) / len(names))
        res[k]["helper_pss_per_container"].append(sum(h["pss"] or 0 for h in helpers) / len(names))
        res[k]["helper_max_rss"].append(max((h["rss"] for h in helpers), default=0))
        res[k]["daemon_pss"].append(proc_pss(pid) or 0)
        if mem:
            res[k]["memory_per_container"].append(sum(mem) / len(mem))
        self.results.setdefault("sa_helpers_sample", {})[k] = helpers[:3]

    # ------------------------------------------------------------------ goals

    def goals(self):
        R = self.results
        g = {}

        def med(key):
            v = R.get(key)
            return v.get("median") if isinstance(v, dict) else v

        def add(name, value, goal, ok):
            g[name] = {"value": value, "goal": goal, "met": None if value is None else bool(ok)}
        add("compute-side build <= 0.5x reference", R.get("ratio_build"), 0.5,
            R.get("ratio_build") is not None and R["ratio_build"] <= 0.5)
        add("API boot <= 1.0x reference", R.get("ratio_api_boot"), 1.0,
            R.get("ratio_api_boot") is not None and R["ratio_api_boot"] <= 1.0)
        add("start-up <= 0.1x reference", R.get("ratio_startup"), 0.1,
            R.get("ratio_startup") is not None and R["ratio_startup"] <= 0.1)
        dens = R.get("density", {}).get("checkpoints", {})
        top = dens.get(max(dens, key=int)) if dens else None
        if top:
            add(f"daemon RSS <= 50 MB at {top['instances']} instances", top["daemon_rss_bytes"], 50e6,
                top["daemon_rss_bytes"] <= 50e6)
            add("no per-container process above 1 MB", top["helper_max_rss_bytes"], 1e6,
                top["helper_max_rss_bytes"] <= 1e6)
            add(f"periodic pass at {top['instances']} instances <= 100 ms CPU", top["pass_cpu_s"], 0.1,
                top["pass_cpu_s"] <= 0.1)
            want = max(self.sz["density"])
            add(f"{want} instances reached", top["instances"], want, top["instances"] >= want)
        v = med("burst_corral_builds_per_s")
        add("burst >= 10 builds/s", v, 10, v is not None and v >= 10)
        v = med("sa_launch_corral_s")
        add("standalone launch <= 50 ms", v, 0.05, v is not None and v <= 0.05)
        a, b = med("floor_corral_launch_s"), med("floor_runc_create_start_s")
        v = None if a is None or b is None else round((a - b) * 1000, 2)
        add("launch overhead over runc create+start <= 5 ms", v, 5, v is not None and v <= 5)
        v = R.get("ratio_lxd_launch_delete")
        add("launch + delete <= 0.25x LXD", v, 0.25, v is not None and v <= 0.25)
        v = med("sa_launches_per_s_sequential_corral")
        add(">= 20 launches/s (sequential)", v, 20, v is not None and v >= 20)
        v = med("sa_launches_per_s_parallel_corral")
        add(">= 20 launches/s (4 at a time)", v, 20, v is not None and v >= 20)
        plugs = [med(f"vifplug_{k}_plug_s") for k in ("bridge", "ovs", "hybrid")]
        plugs = [p for p in plugs if p is not None]
        v = max(plugs) if plugs else None
        add("plug one port <= 30 ms (slowest kind)", v, 0.03, v is not None and v <= 0.03)
        v = med("freshrange_idmapped_launch_s")
        add("launch in a fresh id range <= 100 ms (300 MB image)", v, 0.1, v is not None and v <= 0.1)
        v = R.get("freshrange_idmapped_disk_per_instance_bytes")
        add("disk per idle instance <= 1 MB", v, 1 << 20, v is not None and v <= 1 << 20)
        v = med("snapshotpause_small_pause_ms")
        add("snapshot pause <= 50 ms (small root)", v, 50, v is not None and v <= 50)
        R["goals"] = g

    # ------------------------------------------------------------------ main

    def run(self):
        self.meta()
        self.save()
        if not os.access(BIN, os.X_OK):
            raise SystemExit(f"{BIN} is missing: cargo build --release (or set CORRAL_BIN)")
        self.figure("startup", self.fig_startup)
        self.figure("build", self.fig_build)
        self.figure("lifecycle", self.fig_lifecycle)
        self.figure("burst", self.fig_burst)
        self.figure("density", self.fig_density)
        self.stop_main_hosts()
        self.figure("floor", self.fig_floor)
        self.figure("lxd", self.fig_lxd)
        self.figure("vifplug", self.fig_vifplug)
        self.figure("portboot", self.fig_portboot)
        self.figure("freshrange", self.fig_freshrange)
        self.figure("snapshotpause", self.fig_snapshotpause)
        self.figure("snapshotimage", self.fig_snapshotimage)
        self.goals()
        self.results["meta"]["loadavg_at_end"] = os.getloadavg()
        self.save()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="tiny counts (CI): bench-results/short.json")
    ap.add_argument("--only", default="", help=f"comma-separated figures of {','.join(FIGURES)}")
    ap.add_argument("--out", default=None,
                    help="results file (default bench-results/latest.json, or bench-results/short.json "
                         "with --short); through tox give an absolute path")
    ap.add_argument("--set", action="append", default=[], metavar="SIZE=VALUE",
                    help="override a size, e.g. --set burst=20 --set density=100,250")
    args = ap.parse_args()
    mode = "short" if args.short else "full"
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in SIZES[mode]:
            ap.error(f"unknown size {k}; sizes: {', '.join(SIZES[mode])}")
        SIZES[mode][k] = [int(x) for x in v.split(",")] if isinstance(SIZES[mode][k], list) else int(v)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    bad = only - set(FIGURES)
    if bad:
        ap.error(f"unknown figures: {', '.join(sorted(bad))}")
    if os.geteuid() != 0:
        sys.exit("benches/run.py runs containers: run it as root")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # One benchmark at a time on a machine: two runs would share LXD, the Nova stack and
    # the cores, and spoil each other's figures. A second run waits (bounded) for the first.
    lock = open(LOCK_FILE, "w")
    wait = float(os.environ.get("CORRAL_BENCH_LOCK_WAIT", "2700"))
    deadline = time.monotonic() + wait
    next_note = 0.0
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                sys.exit(f"another benchmark run holds {LOCK_FILE} (waited {wait:.0f} s)")
            if time.monotonic() >= next_note:
                log(f"waiting for another benchmark run to finish ({LOCK_FILE})")
                next_note = time.monotonic() + 60
            time.sleep(1)
    atexit.register(CLEANUP.run_all)
    b = Bench(args.short, only, args.out and os.path.abspath(args.out))
    CLEANUP.pre.append(b.cleanup_servers)  # servers go before their hosts are stopped
    log(f"run {b.tag}: {'short' if args.short else 'full'} -> {b.out}")
    try:
        b.run()
    finally:
        CLEANUP.run_all()
        remove_cgroup_tree(CGROUP_PARENT)
        for d in (RUN_BASE, WORK_BASE):
            try:
                os.rmdir(d)  # only when empty
            except OSError:
                pass
        b.results["meta"]["elapsed_s"] = round(time.monotonic() - b.t_start, 1)
        b.save()
    log(f"done in {time.monotonic() - b.t_start:.0f} s: {b.out}")
    failed = b.results.get("errors")
    if failed:
        log(f"figures with errors: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
