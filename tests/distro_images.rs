//! Real distribution images: a Debian 12 root with systemd as init and
//! cloud-init, built with debootstrap from Debian's mirror (cached between
//! runs by openstack/images/build-debian-rootfs.sh), boots unprivileged on
//! corral, reaches `systemctl is-system-running`, writes its boot to the
//! console log, stops gracefully on SIGRTMIN+3 in seconds and starts again.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Daemon};

macro_rules! require_debian {
    () => {{
        match common::debian_tarball() {
            Ok(p) => p,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        }
    }};
}

fn system_state(d: &Daemon, name: &str) -> String {
    let out = d.cli(&["exec", name, "--", "systemctl", "is-system-running"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_booted(d: &Daemon, name: &str) -> String {
    let mut state = String::new();
    let booted = wait_until(Duration::from_secs(120), || {
        state = system_state(d, name);
        state == "running" || state == "degraded"
    });
    if !booted {
        let failed = d.cli(&["exec", name, "--", "systemctl", "--failed", "--no-pager"]);
        panic!(
            "systemd did not finish booting: {state:?}\nfailed units:\n{}\nconsole:\n{}",
            String::from_utf8_lossy(&failed.stdout),
            d.ok(&["console-log", name])
        );
    }
    state
}

#[test]
fn debian_with_systemd_boots_logs_to_its_console_and_stops_gracefully() {
    require_host!();
    let tarball = require_debian!();
    let mut d = Daemon::start();
    d.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "debian/12",
    ]);
    let img: serde_json::Value = d.client().get("/1.0/images/debian/12").unwrap();
    assert_eq!(img["properties"]["init_system"], "systemd", "{img}");
    assert_eq!(img["properties"]["os"], "debian");

    d.ok(&["launch", "debian/12", "deb"]);
    let uuid = d.uuid("deb");
    let state = wait_booted(&d, "deb");
    eprintln!("system state: {state}");

    // PID 1 is systemd, in a user namespace, in its own cgroup tree.
    let comm = d.ok(&["exec", "deb", "--", "cat", "/proc/1/comm"]);
    assert_eq!(comm.trim(), "systemd");
    let uid_map = d.ok(&["exec", "deb", "--", "cat", "/proc/self/uid_map"]);
    assert!(!uid_map.trim().starts_with("0 0 "), "{uid_map}");
    let cgroup = d.ok(&["exec", "deb", "--", "cat", "/proc/1/cgroup"]);
    assert!(
        cgroup.lines().any(|l| l.ends_with(":/init.scope")),
        "systemd made no init.scope in its own cgroup: {cgroup}"
    );
    // The journal runs (it is a unit systemd started).
    let journald = d.cli(&[
        "exec",
        "deb",
        "--",
        "systemctl",
        "is-active",
        "systemd-journald",
    ]);
    assert_eq!(String::from_utf8_lossy(&journald.stdout).trim(), "active");

    // The console log has systemd's own boot messages, line by line.
    let console = d.ok(&["console-log", "deb"]);
    assert!(
        console.contains("systemd 252"),
        "no systemd banner in the console:\n{console}"
    );
    assert!(
        console.contains("Reached target") || console.contains("Started"),
        "no unit messages in the console:\n{console}"
    );

    // The console relay outlives a crash of the daemon: what the container
    // writes to /dev/console afterwards still reaches the log.
    d.crash();
    d.spawn();
    d.ok(&[
        "exec",
        "deb",
        "--",
        "sh",
        "-c",
        "echo corral-console-after-restart > /dev/console",
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || d
            .ok(&["console-log", "deb"])
            .contains("corral-console-after-restart")),
        "the console lost its relay with the daemon"
    );

    // A graceful stop (SIGRTMIN+3) ends in seconds, not at the timeout.
    let started = Instant::now();
    d.ok(&["stop", "--timeout", "60", "deb"]);
    let took = started.elapsed();
    eprintln!("graceful stop took {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "stop took {took:?}: systemd did not stop on its signal"
    );
    assert_eq!(d.runc_status(&uuid), None);
    let console = d.ok(&["console-log", "deb"]);
    // systemd went through its shutdown (halt.target) before it exited.
    assert!(
        console.contains("Reached target") && console.contains("shutdown.target"),
        "no shutdown in the console:\n{console}"
    );
    assert!(
        console.contains("Halting system"),
        "systemd did not halt:\n{console}"
    );

    // And starts again.
    d.ok(&["start", "deb"]);
    wait_booted(&d, "deb");
    d.ok(&["delete", "--force", "deb"]);
    assert!(
        d.leftovers(&uuid).is_empty(),
        "left behind: {:?}",
        d.leftovers(&uuid)
    );
}

#[test]
fn an_image_property_overrides_the_stop_signal() {
    require_host!();
    let tarball = require_debian!();
    let d = Daemon::start();
    let bad = d.fails(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "debian/bad",
        "--stop-signal",
        "SIGNOPE",
    ]);
    assert!(bad.contains("stop signal"), "{bad}");
    d.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--alias",
        "debian/term",
        "--stop-signal",
        "SIGTERM",
    ]);
    let img: serde_json::Value = d.client().get("/1.0/images/debian/term").unwrap();
    assert_eq!(img["properties"]["stop_signal"], "SIGTERM", "{img}");
    d.ok(&["launch", "debian/term", "term"]);
    wait_booted(&d, "term");
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            d.state
                .join("instances")
                .join(d.uuid("term"))
                .join("boot.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // systemd as PID 1 re-executes itself on SIGTERM rather than stopping:
    // the image's choice is what is sent, so the stop waits out its timeout
    // and kills, and no shutdown reaches the console.
    assert_eq!(boot["stop_signal"], "SIGTERM");
    assert_eq!(boot["stop_signal_number"], libc::SIGTERM);
    d.ok(&["stop", "--timeout", "5", "term"]);
    let console = d.ok(&["console-log", "term"]);
    assert!(console.contains("systemd 252"), "{console}");
    assert!(!console.contains("Halting system"), "{console}");
    d.ok(&["delete", "--force", "term"]);
}
