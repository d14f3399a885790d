//! OCI bundle generation: one `config.json` per instance, built with `oci-spec`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxBlockIo, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType,
    LinuxPids, LinuxResources, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall, LinuxThrottleDevice,
    LinuxThrottleDeviceBuilder, Mount, Process, Root, Spec, User,
};

use super::RuntimeError;

/// An id range of the host that the container's ids 0..size map onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

/// Everything the runtime layer needs to write one bundle.
#[derive(Debug, Clone)]
pub struct BundleConfig {
    pub id: String,
    pub hostname: String,
    /// The root filesystem, already prepared (mounted) by the storage layer.
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// None: privileged (no user namespace).
    pub idmap: Option<IdMap>,
    /// cgroup path, relative to the controllers' roots (e.g. `/corral/<uuid>`).
    pub cgroups_path: String,
    /// Unified cgroup v2 hierarchy (adds a cgroup namespace).
    pub cgroup_v2: bool,
    /// The container's own cgroup is delegated to its root (an init that
    /// manages cgroups, such as systemd): a cgroup namespace on v1 too, and
    /// `/sys/fs/cgroup` mounted writable (what the container may write is
    /// decided by ownership, see `cgroups::delegate`).
    pub cgroup_delegated: bool,
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub memory_bytes: Option<i64>,
    /// Memory + swap limit (v1 `memory.memsw.limit_in_bytes`; runc turns it
    /// into `memory.swap.max` = this - memory on v2).
    pub memory_swap: Option<i64>,
    pub pids_limit: i64,
    /// Host CPUs the instance may run on (kernel list format: `2-3,6`).
    pub cpuset_cpus: Option<String>,
    pub blkio: Option<Blkio>,
    /// /proc and /sys fully visible and writable where the kernel lets a
    /// user namespace write, so nested containers can mount their own.
    pub nesting: bool,
    pub no_new_privileges: bool,
    /// Host paths bound in: device nodes, disks, lxcfs files.
    pub binds: Vec<BindMount>,
    /// Device cgroup rules added to the defaults.
    pub device_rules: Vec<DeviceRule>,
}

/// Block I/O throttles on one block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blkio {
    pub major: i64,
    pub minor: i64,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// A device the container may use (read, write, mknod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub block: bool,
    pub major: i64,
    pub minor: i64,
}

/// Syscalls refused to every instance (with EPERM), as LXD's default deny
/// list: they act on the host kernel, not on anything a namespace owns.
pub const SECCOMP_DENY: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
];

/// Refused to unprivileged instances only.
pub const SECCOMP_DENY_UNPRIVILEGED: &[&str] = &["bpf"];

/// Paths hidden from every instance (kernel memory, keys, debug state).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Host-wide settings instances may read but not write.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default seccomp profile: allow everything but the deny list, which
/// fails with EPERM (so programs fall back, as on a host without the call).
pub fn seccomp(privileged: bool) -> LinuxSeccomp {
    let mut names: Vec<String> = SECCOMP_DENY.iter().map(|s| s.to_string()).collect();
    if !privileged {
        names.extend(SECCOMP_DENY_UNPRIVILEGED.iter().map(|s| s.to_string()));
    }
    let mut deny = LinuxSyscall::default();
    deny.set_names(names)
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(Some(libc::EPERM as u32));
    let mut sc = LinuxSeccomp::default();
    sc.set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
        ]))
        .set_syscalls(Some(vec![deny]));
    sc
}

/// The capabilities a system container keeps, with their kernel numbers.
/// Inside a user namespace they only act on what the namespace owns; the
/// dropped ones (sys_module, sys_rawio, sys_time, sys_pacct, mac_*, bpf,
/// perfmon) act on the host.
const CAPABILITIES: &[(Capability, u32)] = &[
    (Capability::Chown, 0),
    (Capability::DacOverride, 1),
    (Capability::DacReadSearch, 2),
    (Capability::Fowner, 3),
    (Capability::Fsetid, 4),
    (Capability::Kill, 5),
    (Capability::Setgid, 6),
    (Capability::Setuid, 7),
    (Capability::Setpcap, 8),
    (Capability::LinuxImmutable, 9),
    (Capability::NetBindService, 10),
    (Capability::NetBroadcast, 11),
    (Capability::NetAdmin, 12),
    (Capability::NetRaw, 13),
    (Capability::IpcLock, 14),
    (Capability::IpcOwner, 15),
    (Capability::SysChroot, 18),
    (Capability::SysPtrace, 19),
    (Capability::SysAdmin, 21),
    (Capability::SysBoot, 22),
    (Capability::SysNice, 23),
    (Capability::SysResource, 24),
    (Capability::SysTtyConfig, 26),
    (Capability::Mknod, 27),
    (Capability::Lease, 28),
    (Capability::AuditWrite, 29),
    (Capability::AuditControl, 30),
    (Capability::Setfcap, 31),
    (Capability::Syslog, 34),
    (Capability::WakeAlarm, 35),
    (Capability::BlockSuspend, 36),
    (Capability::AuditRead, 37),
    (Capability::CheckpointRestore, 40),
];

/// The bounding set of this process (`CapBnd` in /proc/self/status): a
/// privileged container cannot be given more than the daemon holds.
fn host_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn capabilities(bounding: Option<u64>) -> HashSet<Capability> {
    CAPABILITIES
        .iter()
        .filter(|(_, bit)| bounding.is_none_or(|b| b & (1u64 << bit) != 0))
        .map(|(c, _)| *c)
        .collect()
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn char_rule(major: i64, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(true)
        .set_typ(Some(LinuxDeviceType::C))
        .set_major(Some(major))
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    d
}

/// Builds the OCI runtime spec of one instance.
pub fn spec(cfg: &BundleConfig) -> Result<Spec, oci_spec::OciSpecError> {
    let mut spec = Spec::default();

    let mut root = Root::default();
    root.set_path(cfg.rootfs.clone()).set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_hostname(Some(cfg.hostname.clone()));

    let mut process = Process::default();
    // Unprivileged containers get their capabilities in their own user
    // namespace; a privileged one is limited by the daemon's bounding set.
    let caps = capabilities(if cfg.idmap.is_none() {
        host_bounding_set()
    } else {
        None
    });
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    process
        .set_terminal(Some(false))
        .set_user(User::default())
        .set_args(Some(cfg.args.clone()))
        .set_env(Some(cfg.env.clone()))
        .set_cwd(PathBuf::from("/"))
        .set_capabilities(Some(lc))
        // Limits are inherited from the daemon: a process in a user namespace
        // cannot raise a hard limit above what it was given.
        .set_rlimits(None)
        // System containers run setuid programs (su, ping, sudo) like a host
        // does: no_new_privileges would break them, so it is an option.
        .set_no_new_privileges(Some(cfg.no_new_privileges));
    spec.set_process(Some(process));

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            if cfg.nesting {
                &["nosuid", "noexec", "nodev"]
            } else {
                &["nosuid", "noexec", "nodev", "ro"]
            },
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            if cfg.cgroup_delegated {
                &["nosuid", "noexec", "nodev", "relatime"]
            } else {
                &["nosuid", "noexec", "nodev", "relatime", "ro"]
            },
        ),
    ];
    mounts.push(mount(
        "/run",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "mode=755"],
    ));
    for b in &cfg.binds {
        let mut opts = vec!["rbind"];
        if b.readonly {
            opts.push("ro");
        }
        mounts.push(mount(
            &b.target.to_string_lossy(),
            "bind",
            &b.source.to_string_lossy(),
            &opts,
        ));
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|t| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(t);
        ns
    })
    .collect();
    if cfg.cgroup_v2 || cfg.cgroup_delegated {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::Cgroup);
        namespaces.push(ns);
    }
    if let Some(map) = cfg.idmap {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        namespaces.push(ns);
        let m = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(map.host_base)
            .size(map.size)
            .build()?;
        linux
            .set_uid_mappings(Some(vec![m]))
            .set_gid_mappings(Some(vec![m]));
    } else {
        linux.set_uid_mappings(None).set_gid_mappings(None);
    }
    linux.set_namespaces(Some(namespaces));
    if cfg.nesting {
        // A new proc or sysfs mount in a user namespace needs one already
        // fully visible: nothing mounted over any part of it.
        linux.set_masked_paths(None).set_readonly_paths(None);
    } else {
        linux
            .set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()))
            .set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
    }
    linux.set_seccomp(Some(seccomp(cfg.idmap.is_none())));
    linux.set_cgroups_path(Some(PathBuf::from(&cfg.cgroups_path)));

    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false).set_access(Some("rwm".into()));
    let mut devices = vec![
        deny_all,
        char_rule(1, Some(3), "rwm"), // null
        char_rule(1, Some(5), "rwm"), // zero
        char_rule(1, Some(7), "rwm"), // full
        char_rule(1, Some(8), "rwm"), // random
        char_rule(1, Some(9), "rwm"), // urandom
        char_rule(5, Some(0), "rwm"), // tty
        char_rule(5, Some(1), "rwm"), // console
        char_rule(5, Some(2), "rwm"), // ptmx
        char_rule(136, None, "rwm"),  // pts/*
    ];
    for r in &cfg.device_rules {
        let mut d = char_rule(r.major, Some(r.minor), "rwm");
        if r.block {
            d.set_typ(Some(LinuxDeviceType::B));
        }
        devices.push(d);
    }
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(devices));
    let mut cpu = LinuxCpu::default();
    cpu.set_quota(cfg.cpu_quota_us)
        .set_period(cfg.cpu_period_us)
        .set_shares(cfg.cpu_shares)
        .set_cpus(cfg.cpuset_cpus.clone());
    resources.set_cpu(Some(cpu));
    if let Some(limit) = cfg.memory_bytes {
        let mut mem = LinuxMemoryBuilder::default().limit(limit);
        if let Some(swap) = cfg.memory_swap {
            mem = mem.swap(swap);
        }
        resources.set_memory(Some(mem.build()?));
    }
    if let Some(b) = cfg.blkio {
        let dev = |rate: Option<u64>| -> Result<Option<Vec<LinuxThrottleDevice>>, oci_spec::OciSpecError> {
            rate.map(|rate| {
                LinuxThrottleDeviceBuilder::default()
                    .major(b.major)
                    .minor(b.minor)
                    .rate(rate)
                    .build()
                    .map(|t| vec![t])
            })
            .transpose()
        };
        let mut io = LinuxBlockIo::default();
        io.set_throttle_read_bps_device(dev(b.read_bps)?)
            .set_throttle_write_bps_device(dev(b.write_bps)?)
            .set_throttle_read_iops_device(dev(b.read_iops)?)
            .set_throttle_write_iops_device(dev(b.write_iops)?);
        resources.set_block_io(Some(io));
    }
    let mut pids = LinuxPids::default();
    pids.set_limit(cfg.pids_limit);
    resources.set_pids(Some(pids));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Writes `config.json` into the bundle directory.
pub fn write(bundle: &Path, cfg: &BundleConfig) -> Result<(), RuntimeError> {
    let spec = spec(cfg).map_err(RuntimeError::Spec)?;
    let path = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(RuntimeError::SpecEncode)?;
    // The environment may hold a tenant's secrets: the runtime (root) reads
    // it, nobody else.
    crate::fsutil::write_atomic(&path, &json, 0o600)
        .map_err(|source| RuntimeError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_respect_a_bounding_set() {
        let all = capabilities(None);
        assert_eq!(all.len(), CAPABILITIES.len());
        assert!(!all.contains(&Capability::SysModule));
        let without_resource = capabilities(Some(!(1u64 << 24)));
        assert!(!without_resource.contains(&Capability::SysResource));
        assert!(without_resource.contains(&Capability::SysAdmin));
    }

    fn cfg() -> BundleConfig {
        BundleConfig {
            id: "u".into(),
            hostname: "web1".into(),
            rootfs: "/r".into(),
            args: vec!["/sbin/init".into()],
            env: vec!["PATH=/bin".into()],
            idmap: Some(IdMap {
                host_base: 1_000_000,
                size: 65536,
            }),
            cgroups_path: "/corral/u".into(),
            cgroup_v2: false,
            cgroup_delegated: false,
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_shares: Some(512),
            memory_bytes: Some(256 << 20),
            memory_swap: None,
            pids_limit: 100,
            cpuset_cpus: None,
            blkio: None,
            nesting: false,
            no_new_privileges: false,
            binds: Vec::new(),
            device_rules: Vec::new(),
        }
    }

    #[test]
    fn seccomp_denies_host_kernel_calls() {
        let v = serde_json::to_value(spec(&cfg()).unwrap()).unwrap();
        let sc = &v["linux"]["seccomp"];
        assert_eq!(sc["defaultAction"], "SCMP_ACT_ALLOW");
        let arches: Vec<&str> = sc["architectures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for a in [
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_X86",
            "SCMP_ARCH_X32",
            "SCMP_ARCH_AARCH64",
        ] {
            assert!(arches.contains(&a), "{a} missing from {arches:?}");
        }
        let rule = &sc["syscalls"][0];
        assert_eq!(rule["action"], "SCMP_ACT_ERRNO");
        assert_eq!(rule["errnoRet"], libc::EPERM);
        let names: Vec<&str> = rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for n in [
            "kexec_load",
            "kexec_file_load",
            "open_by_handle_at",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
        ] {
            assert!(names.contains(&n), "{n} not denied");
        }
        // Privileged instances keep bpf (their root is the host's anyway).
        let mut c = cfg();
        c.idmap = None;
        let v = serde_json::to_value(spec(&c).unwrap()).unwrap();
        let names = v["linux"]["seccomp"]["syscalls"][0]["names"].to_string();
        assert!(!names.contains("\"bpf\""), "{names}");
        assert!(names.contains("kexec_load"));
    }

    #[test]
    fn masked_and_readonly_paths_unless_nesting() {
        let v = serde_json::to_value(spec(&cfg()).unwrap()).unwrap();
        let masked = v["linux"]["maskedPaths"].to_string();
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
            "/proc/acpi",
        ] {
            assert!(masked.contains(p), "{p} not masked");
        }
        let ro = v["linux"]["readonlyPaths"].to_string();
        for p in [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ] {
            assert!(ro.contains(p), "{p} not read-only");
        }
        assert_eq!(v["process"]["noNewPrivileges"], false);
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap()
            .clone();
        assert!(sys["options"].to_string().contains("\"ro\""));

        let mut c = cfg();
        c.nesting = true;
        c.no_new_privileges = true;
        let v = serde_json::to_value(spec(&c).unwrap()).unwrap();
        assert!(v["linux"].get("maskedPaths").is_none());
        assert!(v["linux"].get("readonlyPaths").is_none());
        assert_eq!(v["process"]["noNewPrivileges"], true);
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap()
            .clone();
        assert!(!sys["options"].to_string().contains("\"ro\""));
        // Nesting keeps the seccomp deny list.
        assert!(v["linux"]["seccomp"].is_object());
    }

    #[test]
    fn cpuset_swap_blkio_binds_and_device_rules() {
        let mut c = cfg();
        c.cpuset_cpus = Some("1-2".into());
        c.memory_swap = Some(384 << 20);
        c.blkio = Some(Blkio {
            major: 254,
            minor: 0,
            read_bps: Some(1000),
            write_bps: Some(5 << 20),
            read_iops: None,
            write_iops: Some(50),
        });
        c.binds = vec![
            BindMount {
                source: "/var/lib/corral/instances/u/devices/fuse".into(),
                target: "/dev/fuse".into(),
                readonly: false,
            },
            BindMount {
                source: "/srv/data".into(),
                target: "/mnt/data".into(),
                readonly: true,
            },
        ];
        c.device_rules = vec![
            DeviceRule {
                block: false,
                major: 10,
                minor: 229,
            },
            DeviceRule {
                block: true,
                major: 7,
                minor: 3,
            },
        ];
        let v = serde_json::to_value(spec(&c).unwrap()).unwrap();
        let r = &v["linux"]["resources"];
        assert_eq!(r["cpu"]["cpus"], "1-2");
        assert_eq!(r["memory"]["swap"], 384 << 20);
        let bio = &r["blockIO"];
        assert_eq!(bio["throttleReadBpsDevice"][0]["major"], 254);
        assert_eq!(bio["throttleReadBpsDevice"][0]["rate"], 1000);
        assert_eq!(bio["throttleWriteBpsDevice"][0]["rate"], 5 << 20);
        // runc reads the keys case-insensitively (Go json): IOPS == Iops.
        assert_eq!(bio["throttleWriteIopsDevice"][0]["rate"], 50);
        assert!(bio.get("throttleReadIopsDevice").is_none());
        let devs = r["devices"].as_array().unwrap();
        assert!(devs.iter().any(|d| d["type"] == "c"
            && d["major"] == 10
            && d["minor"] == 229
            && d["allow"] == true));
        assert!(devs
            .iter()
            .any(|d| d["type"] == "b" && d["major"] == 7 && d["minor"] == 3));
        let mounts = v["mounts"].as_array().unwrap();
        let data = mounts
            .iter()
            .find(|m| m["destination"] == "/mnt/data")
            .unwrap();
        assert_eq!(data["source"], "/srv/data");
        assert_eq!(data["options"], serde_json::json!(["rbind", "ro"]));
        let fuse = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/fuse")
            .unwrap();
        assert_eq!(fuse["options"], serde_json::json!(["rbind"]));
    }

    #[test]
    fn spec_carries_limits_namespaces_and_idmap() {
        let v = serde_json::to_value(spec(&cfg()).unwrap()).unwrap();
        assert_eq!(v["hostname"], "web1");
        assert_eq!(v["process"]["args"][0], "/sbin/init");
        let linux = &v["linux"];
        assert_eq!(linux["uidMappings"][0]["hostID"], 1_000_000);
        assert_eq!(linux["gidMappings"][0]["size"], 65536);
        let ns: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "network", "ipc", "uts", "mount", "user"] {
            assert!(ns.contains(&want), "{want} missing from {ns:?}");
        }
        assert!(!ns.contains(&"cgroup"));
        let r = &linux["resources"];
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["cpu"]["shares"], 512);
        assert_eq!(r["memory"]["limit"], 256 << 20);
        assert_eq!(r["pids"]["limit"], 100);
        assert_eq!(r["devices"][0]["allow"], false);
        assert_eq!(linux["cgroupsPath"], "/corral/u");
    }

    #[test]
    fn a_delegated_cgroup_is_namespaced_and_writable_on_v1_and_v2() {
        let cgroup_mount = |v: &serde_json::Value| {
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == "/sys/fs/cgroup")
                .unwrap()["options"]
                .to_string()
        };
        let has_cgroupns = |v: &serde_json::Value| {
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "cgroup")
        };
        // Not delegated: read-only, and no cgroup namespace on v1.
        let v = serde_json::to_value(spec(&cfg()).unwrap()).unwrap();
        assert!(cgroup_mount(&v).contains("\"ro\""));
        assert!(!has_cgroupns(&v));
        for v2 in [false, true] {
            let mut c = cfg();
            c.cgroup_v2 = v2;
            c.cgroup_delegated = true;
            let v = serde_json::to_value(spec(&c).unwrap()).unwrap();
            assert!(!cgroup_mount(&v).contains("\"ro\""), "v2={v2}");
            assert!(has_cgroupns(&v), "v2={v2}");
            // The rest of /sys stays read-only.
            let sys = v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == "/sys")
                .unwrap()["options"]
                .to_string();
            assert!(sys.contains("\"ro\""));
        }
    }

    #[test]
    fn privileged_has_no_user_namespace() {
        let mut c = cfg();
        c.idmap = None;
        c.cgroup_v2 = true;
        let v = serde_json::to_value(spec(&c).unwrap()).unwrap();
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().all(|n| n["type"] != "user"));
        assert!(ns.iter().any(|n| n["type"] == "cgroup"));
        assert!(v["linux"].get("uidMappings").is_none());
    }
}
