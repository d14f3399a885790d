"""Session fixtures for the end-to-end Nova scenarios.

The stack (placement, nova-api/conductor/scheduler, glance, neutron) comes from
scripts/nova-stack.sh; tox runs `up` in commands_pre and the `stack` fixture runs it
again (idempotent, ~3 s) so plain `pytest tox-harness/nova` works too.

Scenarios are parametrized over the compute *kind*:
  reference  nova-compute (fake.FakeDriverWithoutFakeNodes) from the stack's venv
  corral     target/debug/corral daemon with a generated nova.conf
Select with `--kinds reference,corral` (default both) or CORRAL_NOVA_KINDS.
"""

import hashlib
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import novaharness as nh  # noqa: E402

ALL_KINDS = ("reference", "corral")

SMALL_FLAVOR = {"id": "corral-test-small", "name": "corral-test.small", "vcpus": 1, "ram": 128, "disk": 1}
# larger than any host: the fake driver reports 800000 MB, corral the machine's RAM
HUGE_FLAVOR = {"id": "corral-test-huge", "name": "corral-test.huge", "vcpus": 1, "ram": 4000000, "disk": 1}
IMAGE_NAME = "corral-busybox-rootfs"


def pytest_addoption(parser):
    parser.addoption(
        "--kinds", default=os.environ.get("CORRAL_NOVA_KINDS", ",".join(ALL_KINDS)),
        help="comma-separated compute kinds to run: reference,corral (default both)")


def pytest_configure(config):
    config.addinivalue_line("markers", "kinds(*names): the compute kinds a scenario runs on (default all)")
    kinds = [k.strip() for k in config.getoption("--kinds").split(",") if k.strip()]
    bad = [k for k in kinds if k not in ALL_KINDS]
    if bad or not kinds:
        raise pytest.UsageError("--kinds takes a comma-separated subset of %s, got %r"
                                % (",".join(ALL_KINDS), config.getoption("--kinds")))
    config._corral_kinds = kinds


def pytest_generate_tests(metafunc):
    if "kind" not in metafunc.fixturenames:
        return
    m = metafunc.definition.get_closest_marker("kinds")
    # every kind the scenario supports; the ones not chosen with --kinds are
    # deselected below (reported as "deselected", never as silent skips)
    metafunc.parametrize("kind", list(m.args if m else ALL_KINDS))


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for it in items:
        cs = getattr(it, "callspec", None)
        if cs is not None and "kind" in cs.params and cs.params["kind"] not in config._corral_kinds:
            drop.append(it)
        else:
            keep.append(it)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ----------------------------------------------------------------------------- stack


@pytest.fixture(scope="session")
def stack():
    took = nh.Stack.ensure_up()
    s = nh.Stack()
    print("\nnova stack up (%.1f s): %s, logs in %s" % (took, s.nova_url, s.logs))
    return s


@pytest.fixture(scope="session")
def nova(stack):
    n = nh.Nova(stack)
    v = n.get("/", expect=200).json()["version"]
    # use 2.104 when this nova offers it, else its maximum
    if tuple(map(int, v["version"].split("."))) < (2, 104):
        nh.COMPUTE_MICROVERSION = v["version"]
        n.s.headers["OpenStack-API-Version"] = "compute " + v["version"]
        n.s.headers["X-OpenStack-Nova-API-Version"] = v["version"]
    return n


@pytest.fixture(scope="session")
def placement(stack):
    return nh.Placement(stack)


@pytest.fixture(scope="session")
def glance(stack):
    return nh.RestClient(stack.glance_url, {"Accept": "application/json"})


@pytest.fixture(scope="session")
def run_id():
    return nh.new_run_id()


# ----------------------------------------------------------------------------- image, flavors


@pytest.fixture(scope="session")
def image(stack, glance):
    """The busybox root filesystem tarball (openstack/images/build-busybox-rootfs.sh) in Glance.

    Uploaded unchanged as disk_format=raw, container_format=bare. Glance 33 accepts a
    tar.gz under raw/bare (also under `compressed` or `docker`): its format inspector
    finds no disk format in it, so it is "raw", and the file store keeps the bytes
    as they are (<datadir>/<image id>, os_hash_algo sha512). corral therefore gets the
    tarball from GET /v2/images/{id}/file and must tell plain/gzip/xz tar apart by magic
    bytes, not by disk_format/container_format.
    """
    out_dir = os.path.join(stack.base, "images")
    os.makedirs(out_dir, exist_ok=True)
    tarball = os.path.join(out_dir, "busybox-rootfs.tar.gz")
    if not os.path.exists(tarball) or os.path.getmtime(tarball) < os.path.getmtime(nh.IMAGE_SCRIPT):
        p = subprocess.run(["sh", nh.IMAGE_SCRIPT, tarball + ".tmp.tar.gz"], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.exit("building the busybox image failed: %s%s" % (p.stdout, p.stderr), returncode=3)
        os.replace(tarball + ".tmp.tar.gz", tarball)
    data = open(tarball, "rb").read()
    sha512 = hashlib.sha512(data).hexdigest()
    for img in glance.get("/v2/images?name=" + IMAGE_NAME, expect=200).json()["images"]:
        if img["status"] == "active" and img.get("os_hash_value") == sha512:
            return img
        glance.delete("/v2/images/" + img["id"], expect=(204, 404))
    img = glance.post("/v2/images", {
        "name": IMAGE_NAME, "disk_format": "raw", "container_format": "bare", "visibility": "public",
    }, expect=201).json()
    glance.request("PUT", "/v2/images/%s/file" % img["id"], data=data,
                   headers={"Content-Type": "application/octet-stream"}, expect=204)
    img = glance.get("/v2/images/" + img["id"], expect=200).json()
    assert img["status"] == "active", img
    assert img["os_hash_value"] == sha512, "glance changed the tarball's bytes"
    return img


def _ensure_flavor(nova, spec):
    r = nova.get("/flavors/" + spec["id"], expect=(200, 404))
    if r.status_code == 200:
        f = r.json()["flavor"]
        if all(f[k] == spec[k] for k in ("vcpus", "ram", "disk")):
            return f
        nova.delete("/flavors/" + spec["id"], expect=202)
    return nova.post("/flavors", {"flavor": dict(spec)}, expect=200).json()["flavor"]


@pytest.fixture(scope="session")
def small_flavor(nova):
    return _ensure_flavor(nova, SMALL_FLAVOR)


@pytest.fixture(scope="session")
def huge_flavor(nova):
    return _ensure_flavor(nova, HUGE_FLAVOR)


# ----------------------------------------------------------------------------- hosts


class Hosts:
    """Starts compute hosts on demand and tears them all down at the end of the session.

    primary(kind) is the one long-lived host per kind that most scenarios pin their
    servers to; its start-up result (host or failure) is cached, so a kind whose host
    cannot come up costs one timeout, and every scenario of that kind fails with the
    same message."""

    def __init__(self, stack, nova, placement, run_id):
        self.stack, self.nova, self.placement, self.run_id = stack, nova, placement, run_id
        self.hosts = []
        self._primary = {}
        self._seq = 0

    def name(self, kind, tag):
        return "%s%s-%s" % (nh.HOST_PREFIX[kind], self.run_id, tag)

    def start(self, kind, tag=None, conf=None, name=None):
        """Starts one host and waits until it is up and schedulable; pytest.fail otherwise.
        `conf` (corral only): extra nova.conf options, {section: {option: value}}.
        `name`: the host name as it is (default: a name made of the kind, run id and tag)."""
        return self.start_many(kind, 1, tag, conf, name=name)[0]

    def start_neutron_host(self, kind="corral", conf=None):
        """The host whose ports Neutron binds: named as the stack's OVS and DHCP agents
        (stack.json `neutron_agent_host`), so ports bound to it get vif_type ovs on the
        stack's integration bridge (`br_int`). One such host at a time."""
        name = getattr(self.stack, "neutron_agent_host", None)
        if not name:
            pytest.fail("the stack runs no Neutron agents (stack.json has no neutron_agent_host)", pytrace=False)
        if any(h.name == name for h in self.hosts):
            pytest.fail("a host named %s already runs in this session" % name, pytrace=False)
        return self.start(kind, conf=conf, name=name)

    def start_many(self, kind, n, tag=None, conf=None, name=None):
        assert name is None or n == 1, "one host per name"
        hs = []
        kw = {"extra_conf": conf} if conf else {}
        for _ in range(n):
            self._seq += 1
            h = nh.HOST_CLASSES[kind](self.stack, self.nova, self.placement,
                                      name or self.name(kind, tag or "h%d" % self._seq), **kw)
            self.hosts.append(h)
            hs.append(h)
        try:
            for h in hs:
                h.start()
            for h in hs:          # started together, so they come up in parallel
                h.wait_up()
            nh.discover(hs)
        except nh.HostStartError as e:
            self.teardown(*hs)    # stop at once, keep the logs
            pytest.fail(str(e), pytrace=False)
        return hs

    def primary(self, kind):
        if kind not in self._primary:
            try:
                self._primary[kind] = self.start(kind, "main")
            except pytest.fail.Exception as e:
                self._primary[kind] = e
        v = self._primary[kind]
        if isinstance(v, BaseException):
            pytest.fail(str(v), pytrace=False)
        return v

    def teardown(self, *hs):
        """Servers first (through the API, while the host still runs), then the process
        (all of `hs` at once), then its service row (which removes the compute node,
        host mapping and resource provider), then its local state."""
        hs = [h for h in hs if h in self.hosts]
        errors = []
        for h in hs:
            self.hosts.remove(h)
            try:
                delete_servers_on_host(self.nova, h.name, h if h.alive() else None)
            except Exception as e:  # noqa: BLE001 - teardown is best effort, but loud
                errors.append("%s: deleting servers: %s" % (h.name, e))
        for h in hs:
            h.terminate()
        for h in hs:
            h.stop()
            try:
                delete_service(self.nova, h.name)
            except Exception as e:  # noqa: BLE001
                errors.append("%s: deleting the service: %s" % (h.name, e))
            h.cleanup_state()
        if errors:
            print("\nteardown: " + "; ".join(errors))

    def close(self):
        self.teardown(*reversed(self.hosts))


def delete_servers_on_host(nova, host, h=None, timeout=nh.TRANSITION_TIMEOUT):
    servers = nova.get("/servers/detail?all_tenants=1&host=" + host, expect=200).json()["servers"]
    for s in servers:
        nova.delete("/servers/" + s["id"], expect=(204, 404))
    for s in servers:
        nh.wait_gone(nova, s["id"], h, timeout=timeout)


def delete_service(nova, host):
    for sv in nova.services(host=host):
        nova.delete("/os-services/%s" % sv["id"], expect=(204, 404))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_stale_hosts(stack, nova):
    """Hosts of earlier sessions that ended without a teardown (crash, kill -9): stop
    leftover processes, delete their servers and service rows (so placement and the
    cell stay clean) and their state. Hosts of a session that still runs are left alone."""
    live = set()
    run = stack.run
    for fn in sorted(os.listdir(run)) if os.path.isdir(run) else []:
        if not (fn.startswith("host-") and fn.endswith(".pid")):
            continue
        name = fn[len("host-"):-len(".pid")]
        try:
            session = int(open(os.path.join(run, "host-%s.session" % name)).read())
        except (OSError, ValueError):
            session = 0
        if session and _pid_alive(session):
            live.add(name)
            continue
        try:
            pid = int(open(os.path.join(run, fn)).read())
            cmdline = open("/proc/%d/cmdline" % pid, "rb").read().decode(errors="replace")
            if stack.base in cmdline:
                os.kill(pid, 9)
        except (OSError, ValueError):
            pass
        for ext in (".pid", ".session"):
            try:
                os.unlink(os.path.join(run, "host-%s%s" % (name, ext)))
            except FileNotFoundError:
                pass
    for sv in nova.services():
        if sv["host"].startswith(tuple(nh.HOST_PREFIX.values())) and sv["host"] not in live:
            try:
                delete_servers_on_host(nova, sv["host"], timeout=60)
            except AssertionError as e:
                print("stale host %s: %s" % (sv["host"], e))
            nova.delete("/os-services/%s" % sv["id"], expect=(204, 404, 409))
    # availability-zone aggregates of the two-hosts scenario
    for agg in nova.get("/os-aggregates", expect=200).json()["aggregates"]:
        if agg["name"].startswith("corral-az-") and not any(h in live for h in agg["hosts"]):
            for h in agg["hosts"]:
                nova.post("/os-aggregates/%s/action" % agg["id"], {"remove_host": {"host": h}})
            nova.delete("/os-aggregates/%s" % agg["id"])
    if os.path.isdir(stack.hosts):
        for d in os.listdir(stack.hosts):
            if d not in live:
                nh.HOST_CLASSES["corral" if d.startswith("corral-") else "reference"](
                    stack, nova, None, d).cleanup_state()


@pytest.fixture(scope="session")
def hosts(stack, nova, placement, run_id):
    remove_stale_hosts(stack, nova)
    os.makedirs(stack.hosts, exist_ok=True)
    hs = Hosts(stack, nova, placement, run_id)
    yield hs
    hs.close()


# ----------------------------------------------------------------------------- servers


class Servers:
    """Boots servers for one test and deletes whatever is left at its end."""

    def __init__(self, nova, image, flavor, run_id, name):
        self.nova, self.image, self.flavor, self.run_id = nova, image, flavor, run_id
        self.name = name
        self.created = []

    def create(self, host=None, flavor=None, image_ref=None, expect=202, **extra):
        body = {
            "name": "%s-%s-%d" % (self.name, self.run_id, len(self.created)),
            "imageRef": image_ref or self.image["id"],
            "flavorRef": (flavor or self.flavor)["id"],
            "networks": "none",
        }
        if host is not None:
            body["host"] = host.name
        body.update(extra)
        r = self.nova.post("/servers", {"server": body}, expect=expect)
        if r.status_code != 202:
            return r
        d = r.json()
        if "server" in d:
            self.created.append(d["server"]["id"])
            return d["server"]
        return d

    def boot(self, host, what="boot", **kw):
        s = self.create(host=host, **kw)
        return nh.wait_server(self.nova, s["id"], "ACTIVE", host, what=what)

    def cleanup(self):
        created, self.created = self.created, []
        for sid in created:
            try:
                self.nova.delete("/servers/" + sid, expect=(204, 404))
            except AssertionError:
                pass
        for sid in created:
            try:
                nh.wait_gone(self.nova, sid, timeout=60)
            except AssertionError as e:
                print("\ncleanup: %s" % e)


@pytest.fixture
def servers(request, nova, image, small_flavor, run_id):
    s = Servers(nova, image, small_flavor, run_id, request.node.originalname.replace("_", "-")[:40])
    yield s
    s.cleanup()


@pytest.fixture
def timer():
    """timer('step') records how long each step took; printed with -s / on failure."""
    marks = []
    t0 = [time.time()]

    def mark(what):
        now = time.time()
        marks.append((what, now - t0[0]))
        t0[0] = now

    yield mark
    if marks:
        print("\n  timings: " + ", ".join("%s %.2fs" % m for m in marks))
