//! OCI bundle generation: one `config.json` per instance, built with `oci-spec`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType, LinuxPids,
    LinuxResources, Mount, Process, Root, Spec, User,
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
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub memory_bytes: Option<i64>,
    pub pids_limit: i64,
}

/// The capabilities a system container keeps. Inside a user namespace they
/// only act on what the namespace owns; the dropped ones act on the host.
fn capabilities() -> HashSet<Capability> {
    use Capability::*;
    [
        AuditControl,
        AuditRead,
        AuditWrite,
        BlockSuspend,
        CheckpointRestore,
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        IpcLock,
        IpcOwner,
        Kill,
        Lease,
        LinuxImmutable,
        Mknod,
        NetAdmin,
        NetBindService,
        NetBroadcast,
        NetRaw,
        Setfcap,
        Setgid,
        Setpcap,
        Setuid,
        SysAdmin,
        SysBoot,
        SysChroot,
        SysNice,
        SysPtrace,
        SysResource,
        SysTtyConfig,
        Syslog,
        WakeAlarm,
    ]
    .into_iter()
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
    let caps = capabilities();
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
        // System containers run setuid programs (su, ping) like a host does.
        .set_no_new_privileges(Some(false));
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
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    mounts.push(mount(
        "/run",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "mode=755"],
    ));
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
    if cfg.cgroup_v2 {
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
    linux.set_cgroups_path(Some(PathBuf::from(&cfg.cgroups_path)));

    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false).set_access(Some("rwm".into()));
    let devices = vec![
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
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(devices));
    let mut cpu = LinuxCpu::default();
    cpu.set_quota(cfg.cpu_quota_us)
        .set_period(cfg.cpu_period_us)
        .set_shares(cfg.cpu_shares);
    resources.set_cpu(Some(cpu));
    if let Some(limit) = cfg.memory_bytes {
        let mem = LinuxMemoryBuilder::default().limit(limit).build()?;
        resources.set_memory(Some(mem));
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
    let tmp = bundle.join("config.json.tmp");
    let json = serde_json::to_vec_pretty(&spec).map_err(RuntimeError::SpecEncode)?;
    std::fs::write(&tmp, json).map_err(|source| RuntimeError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| RuntimeError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_shares: Some(512),
            memory_bytes: Some(256 << 20),
            pids_limit: 100,
        }
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
