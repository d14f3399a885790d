//! cloud-init in a real distribution image: the Debian 12 test image (systemd
//! and cloud-init, see openstack/images/build-debian-rootfs.sh) boots with a
//! config drive as Nova gives one (the driver in this process, over real runc
//! and an unprivileged id mapping), and cloud-init's ConfigDrive datasource
//! reads it at its seed directory and runs the user data.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral::driver::{ConfigDrive, ContainerDriver, Driver, InstanceSpec};

/// Removes the container and its console relay if the test stops half-way.
struct Cleanup {
    runtime_root: PathBuf,
    uuid: String,
    instance_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(&self.runtime_root)
            .args(["delete", "--force", &self.uuid])
            .output();
        let _ = std::fs::remove_dir_all(&self.runtime_root);
        corral::runtime::console::stop(&self.instance_dir, &self.instance_dir.join("console.log"));
    }
}

async fn driver(dir: &Path, runtime_root: &Path) -> ContainerDriver {
    // An id range of its own (config_drive.rs uses 200,000,000 and up).
    let base = 300_000_000u64 + u64::from(std::process::id() % 1000) * 65536;
    common::in_process_driver(dir, runtime_root, base, 30).await
}

async fn sh(d: &ContainerDriver, uuid: &str, script: &str) -> (i32, String) {
    let argv = ["/bin/sh", "-c", script].map(String::from);
    let out = d
        .exec(uuid, &argv, &[], None, Duration::from_secs(60))
        .await
        .unwrap();
    (out.exit_code, format!("{}{}", out.stdout, out.stderr))
}

const USER_DATA: &str = "#cloud-config
write_files:
  - path: /etc/corral-write-files
    content: |
      written by cloud-init
runcmd:
  - [ sh, -c, 'echo runcmd ran > /var/lib/corral-runcmd' ]
";

#[tokio::test]
async fn cloud_init_runs_the_user_data_of_the_config_drive() {
    require_host!();
    let tarball = match common::debian_tarball() {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("corral-test-cloudinit-")
        .tempdir()
        .unwrap();
    let runtime_root = PathBuf::from(format!("/run/corral-test/cloudinit-{}", std::process::id()));
    let uuid = uuid::Uuid::new_v4().to_string();
    let _cleanup = Cleanup {
        runtime_root: runtime_root.clone(),
        uuid: uuid.clone(),
        instance_dir: tmp.path().join("state/instances").join(&uuid),
    };
    let d = driver(tmp.path(), &runtime_root).await;
    d.images()
        .import_image(&tarball, Some("debian/12"), None)
        .await
        .unwrap();
    // The files Nova's config drive has (see src/compute/metadata.rs).
    let mut files = BTreeMap::new();
    files.insert(
        "openstack/latest/meta_data.json".to_string(),
        format!(
            r#"{{"uuid": "{uuid}", "name": "cloudy", "hostname": "cloudy", "launch_index": 0, "availability_zone": "nova", "public_keys": {{}}}}"#
        )
        .into_bytes(),
    );
    files.insert(
        "openstack/latest/user_data".to_string(),
        USER_DATA.as_bytes().to_vec(),
    );
    files.insert(
        "openstack/latest/network_data.json".to_string(),
        br#"{"links": [], "networks": [], "services": []}"#.to_vec(),
    );
    let spec = InstanceSpec {
        config_drive: Some(ConfigDrive { files }),
        ..common::spec(&uuid, "cloudy", "debian/12")
    };
    d.spawn(&spec, true, None).await.unwrap();

    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut done = false;
    while std::time::Instant::now() < deadline {
        last = sh(
            &d,
            &uuid,
            "cat /var/lib/corral-runcmd 2>/dev/null; test -e /run/cloud-init/result.json && echo finished",
        )
        .await
        .1;
        // result.json is written when the last stage (final) ends.
        if last.contains("finished") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, log) = sh(
        &d,
        &uuid,
        "tail -n 40 /var/log/cloud-init.log; cat /run/cloud-init/result.json",
    )
    .await;
    assert!(done, "cloud-init did not finish: {last}\n{log}");
    assert!(
        last.contains("runcmd ran"),
        "runcmd did not run: {last}\n{log}"
    );
    let (rc, out) = sh(&d, &uuid, "cat /etc/corral-write-files").await;
    assert_eq!((rc, out.as_str()), (0, "written by cloud-init\n"), "{log}");
    // The datasource was the config drive, read at its seed directory.
    let (_, result) = sh(&d, &uuid, "cat /run/cloud-init/result.json").await;
    let (_, status) = sh(&d, &uuid, "cloud-init status --long 2>&1").await;
    eprintln!("cloud-init result: {result}\n{status}");
    // Nothing in the image's cloud-init fails in a container.
    assert!(status.contains("status: done"), "{status}\n{log}");
    assert!(result.contains("ConfigDrive"), "{result}");
    assert!(
        result.contains("/var/lib/cloud/seed/config_drive"),
        "{result}"
    );
    // The instance id cloud-init keeps is the instance's uuid.
    let (_, id) = sh(&d, &uuid, "cat /var/lib/cloud/data/instance-id").await;
    assert_eq!(id.trim(), uuid);
    d.destroy(&uuid).await.unwrap();
}
