"""A real distribution image through Nova and Glance: the Debian 12 root with systemd
and cloud-init (openstack/images/build-debian-rootfs.sh, cached under
/var/cache/corral-images) uploaded to Glance, booted on a corral host with
`--config-drive true --user-data`: systemd reaches `running` or `degraded`, its boot is
in the console output Nova shows, cloud-init runs the user data from the config drive,
and `openstack server stop` (SIGRTMIN+3, chosen from the image) ends in seconds.
"""

import base64
import hashlib
import os
import subprocess
import time

import pytest

import novaharness as nh

DEBIAN_SCRIPT = os.path.join(nh.REPO, "openstack", "images", "build-debian-rootfs.sh")

USER_DATA = b"""#cloud-config
runcmd:
  - [ sh, -c, 'echo corral-user-data-ran > /var/lib/corral-runcmd' ]
"""

DISTRO_FLAVOR = {"id": "corral-test-distro", "name": "corral-test-distro",
                 "vcpus": 1, "ram": 512, "disk": 2}


@pytest.fixture(scope="module")
def debian_image(stack, glance):
    out = os.path.join(stack.base, "images", "debian-12.tar.gz")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    p = subprocess.run(["sh", DEBIAN_SCRIPT, out], capture_output=True, text=True)
    if p.returncode == 3:
        pytest.skip("Debian's mirror cannot be reached: %s" % p.stderr.strip())
    assert p.returncode == 0, "building the Debian image failed: %s%s" % (p.stdout, p.stderr)
    data = open(out, "rb").read()
    sha512 = hashlib.sha512(data).hexdigest()
    name = "corral-test-debian-12"
    for img in glance.get("/v2/images?name=" + name, expect=200).json()["images"]:
        if img["status"] == "active" and img.get("os_hash_value") == sha512:
            return img
        glance.delete("/v2/images/" + img["id"], expect=(204, 404))
    img = glance.post("/v2/images", {"name": name, "disk_format": "raw", "container_format": "bare",
                                     "visibility": "public", "os_distro": "debian"}, expect=201).json()
    glance.request("PUT", "/v2/images/%s/file" % img["id"], data=data,
                   headers={"Content-Type": "application/octet-stream"}, expect=204)
    img = glance.get("/v2/images/" + img["id"], expect=200).json()
    assert img["status"] == "active", img
    return img


@pytest.fixture(scope="module")
def distro_flavor(nova):
    r = nova.get("/flavors/" + DISTRO_FLAVOR["id"], expect=(200, 404))
    if r.status_code == 200:
        return r.json()["flavor"]
    return nova.post("/flavors", {"flavor": dict(DISTRO_FLAVOR)}, expect=200).json()["flavor"]


@pytest.mark.kinds("corral")
def test_debian_systemd_cloud_init_through_nova(kind, hosts, nova, servers, debian_image,
                                                distro_flavor, timer):
    host = hosts.primary(kind)
    srv = servers.boot(host, what="boot the Debian image", image_ref=debian_image["id"],
                       flavor=distro_flavor, config_drive=True,
                       user_data=base64.b64encode(USER_DATA).decode())
    timer("boot")

    def inside(*argv):
        p = host.runc("exec", srv["id"], *argv)
        return p.returncode, (p.stdout + p.stderr).strip()

    state = nh.wait_for(
        lambda: (lambda o: o if o in ("running", "degraded") else None)(
            inside("systemctl", "is-system-running")[1]), 120)
    assert state, "systemd did not finish booting: %r\n%s" % (
        inside("systemctl", "--failed", "--no-pager"), host.log_excerpt())
    timer("systemd up (%s)" % state)
    assert inside("cat", "/proc/1/comm") == (0, "systemd")

    # cloud-init read the config drive and ran the user data.
    ran = nh.wait_for(lambda: inside("test", "-e", "/run/cloud-init/result.json")[0] == 0, 180)
    rc, result = inside("cat", "/run/cloud-init/result.json")
    assert ran, "cloud-init did not finish: %s" % inside("cloud-init", "status", "--long")[1]
    assert "ConfigDrive" in result, result
    assert inside("cat", "/var/lib/corral-runcmd") == (0, "corral-user-data-ran"), \
        inside("cloud-init", "status", "--long")[1]
    assert inside("cat", "/var/lib/cloud/data/instance-id") == (0, srv["id"])
    timer("cloud-init done")

    # Nova's console output shows systemd's boot.
    out = nova.action(srv["id"], {"os-getConsoleOutput": {"length": -1}}, expect=200).json()["output"]
    assert "systemd 252" in out, out[-2000:]
    assert "Reached target" in out, out[-2000:]

    # A stop is graceful and quick: systemd halts on SIGRTMIN+3.
    started = time.monotonic()
    nova.action(srv["id"], {"os-stop": None})
    nh.wait_server(nova, srv["id"], "SHUTOFF", host, what="stop")
    took = time.monotonic() - started
    timer("stop")
    print("\ngraceful stop of the Debian server through Nova: %.1f s" % took)
    out = nova.action(srv["id"], {"os-getConsoleOutput": {"length": 40}}, expect=200).json()["output"]
    assert "Halting system" in out, out

    nova.action(srv["id"], {"os-start": None})
    nh.wait_server(nova, srv["id"], "ACTIVE", host, what="start")
    state = nh.wait_for(
        lambda: (lambda o: o if o in ("running", "degraded") else None)(
            inside("systemctl", "is-system-running")[1]), 120)
    assert state, "systemd did not boot again"
    timer("started again")
