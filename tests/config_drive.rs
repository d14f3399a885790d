//! The config drive and injected network configuration in a real runc
//! container: the driver (in this process, over real runc, overlay roots and
//! an unprivileged id mapping) writes them, the container reads them at
//! cloud-init's seed directory, read-only and owned by its own root, and a
//! rebuild gives it the new content.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::RuntimeCleanup as Cleanup;
use corral::driver::configdrive::SEED_DIR;
use corral::driver::{ConfigDrive, ContainerDriver, Driver, InstanceSpec};

async fn driver(dir: &Path, runtime_root: &Path) -> ContainerDriver {
    // An id range of its own (other tests use 10,000,000 and up).
    let base = 200_000_000u64 + u64::from(std::process::id() % 1000) * 65536;
    common::in_process_driver(dir, runtime_root, base, 5).await
}

fn drive(user_data: &str) -> ConfigDrive {
    let mut files = BTreeMap::new();
    files.insert(
        "openstack/latest/meta_data.json".to_string(),
        br#"{"uuid": "x"}"#.to_vec(),
    );
    files.insert(
        "openstack/latest/user_data".to_string(),
        user_data.as_bytes().to_vec(),
    );
    ConfigDrive { files }
}

async fn sh(d: &ContainerDriver, uuid: &str, script: &str) -> (i32, String) {
    let argv = ["/bin/sh", "-c", script].map(String::from);
    let out = d
        .exec(uuid, &argv, &[], None, Duration::from_secs(20))
        .await
        .unwrap();
    (out.exit_code, format!("{}{}", out.stdout, out.stderr))
}

#[tokio::test]
async fn a_container_reads_its_config_drive_read_only_as_its_own_root() {
    require_host!();
    let tmp = tempfile::Builder::new()
        .prefix("corral-test-cfgdrive-")
        .tempdir()
        .unwrap();
    let runtime_root = PathBuf::from(format!("/run/corral-test/cfgdrive-{}", std::process::id()));
    let uuid = uuid::Uuid::new_v4().to_string();
    let _cleanup = Cleanup {
        runtime_root: runtime_root.clone(),
        uuid: uuid.clone(),
    };
    let d = driver(tmp.path(), &runtime_root).await;
    d.images()
        .import_image(&common::busybox_tarball(), Some("busybox"), None)
        .await
        .unwrap();
    let spec = InstanceSpec {
        config_drive: Some(drive("#!/bin/sh\necho first\n")),
        network_interfaces: Some("auto lo\niface lo inet loopback\n# first\n".into()),
        ..common::spec(&uuid, "cfgdrive", "busybox")
    };
    d.spawn(&spec, true, None).await.unwrap();

    let file = format!("{SEED_DIR}/openstack/latest/user_data");
    let (rc, out) = sh(&d, &uuid, &format!("cat {file}")).await;
    assert_eq!((rc, out.as_str()), (0, "#!/bin/sh\necho first\n"));
    // Owned by the container's root, files 0644 and directories 0755.
    let (rc, out) = sh(
        &d,
        &uuid,
        &format!("stat -c '%u %g %a' {file} {SEED_DIR}/openstack/latest {SEED_DIR}"),
    )
    .await;
    assert_eq!(
        (rc, out.as_str()),
        (0, "0 0 644\n0 0 755\n0 0 755\n"),
        "{out}"
    );
    // Read-only, even for the container's root.
    let (rc, out) = sh(&d, &uuid, &format!("echo evil > {file}")).await;
    assert_ne!(rc, 0, "{out}");
    let (rc, out) = sh(&d, &uuid, &format!("touch {SEED_DIR}/new")).await;
    assert_ne!(rc, 0, "{out}");
    let (rc, out) = sh(&d, &uuid, &format!("mount -o remount,rw {SEED_DIR}")).await;
    assert_ne!(rc, 0, "{out}");
    let (_, out) = sh(&d, &uuid, &format!("grep ' {SEED_DIR} ' /proc/mounts")).await;
    assert!(out.contains(" ro,") || out.contains(" ro "), "{out}");
    // On the host: the mapped root owns the files, in the instance directory.
    let view = d.get(&uuid).await.unwrap();
    let host_root = view.idmap.expect("an unprivileged instance").host_base;
    assert_ne!(host_root, 0);
    let on_host = tmp
        .path()
        .join("state/instances")
        .join(&uuid)
        .join("config-drive/openstack/latest/user_data");
    let meta = std::fs::metadata(&on_host).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (host_root, host_root));
    // The network configuration is in the root, the container root's own.
    let (rc, out) = sh(
        &d,
        &uuid,
        "cat /etc/network/interfaces; stat -c '%u %a' /etc/network/interfaces",
    )
    .await;
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.starts_with("auto lo\n") && out.contains("# first\n0 644\n"),
        "{out}"
    );

    // A hard reboot writes the drive again from the spec; the root (and what
    // the instance changed in it) stays.
    let (rc, out) = sh(&d, &uuid, "echo '# mine' >> /etc/network/interfaces").await;
    assert_eq!(rc, 0, "{out}");
    d.reboot(&uuid, true, Duration::from_secs(5)).await.unwrap();
    let (rc, out) = sh(&d, &uuid, &format!("cat {file} /etc/network/interfaces")).await;
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.starts_with("#!/bin/sh\necho first\n") && out.ends_with("# first\n# mine\n"),
        "{out}"
    );

    // A rebuild: the new drive and network configuration are what it sees.
    d.set_guest_data(
        &uuid,
        Some(drive("#!/bin/sh\necho second\n")),
        Some("auto lo\niface lo inet loopback\n# second\n".into()),
    )
    .await
    .unwrap();
    d.rebuild(&uuid, "busybox", false).await.unwrap();
    let (rc, out) = sh(
        &d,
        &uuid,
        &format!("cat {file}; cat /etc/network/interfaces"),
    )
    .await;
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("echo second\n") && out.contains("# second\n"),
        "{out}"
    );
    assert!(!out.contains("first"), "{out}");

    // Hostile content is refused before anything changes.
    let mut bad = drive("x");
    bad.files.insert("../escape".into(), b"x".to_vec());
    let err = d.set_guest_data(&uuid, Some(bad), None).await.unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");

    d.destroy(&uuid).await.unwrap();
    assert!(!tmp.path().join("state/instances").join(&uuid).exists());
}
