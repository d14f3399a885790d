//! The config drive of an instance: a tree of files (Nova's `openstack/...`
//! metadata, built by a frontend) that the driver writes into the instance
//! directory and binds read-only into the container at cloud-init's
//! ConfigDrive seed directory, owned by the container's root. Also the
//! network configuration written into a fresh root (`[corral] inject_network`).
//!
//! The content is checked before anything is written: relative paths of
//! plain names only (no `..`, no absolute paths, no odd characters), a
//! bounded number of files and bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Where cloud-init's ConfigDrive data source looks for a seed
/// (`DataSourceConfigDrive.seed_dir`): `openstack/latest/meta_data.json` ...
pub const SEED_DIR: &str = "/var/lib/cloud/seed/config_drive";
/// The tree's directory inside the instance directory.
pub const DRIVE_DIR: &str = "config-drive";
/// The file `[corral] inject_network` writes in a fresh root.
pub const INTERFACES_PATH: &str = "etc/network/interfaces";
/// Most files one drive may hold.
pub const MAX_FILES: usize = 512;
/// Most bytes of all files together (Nova's 64 MiB config drive image is far
/// more than its metadata ever takes; user data alone is capped at 48 KiB).
pub const MAX_TOTAL_BYTES: usize = 8 << 20;
/// Most bytes of an injected network configuration.
pub const MAX_INTERFACES_BYTES: usize = 64 << 10;
const MAX_DEPTH: usize = 8;

/// Errors of config drive content and of writing it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("config drive path {0:?} is not a relative path of plain names")]
    BadPath(String),
    #[error("config drive has {0} files, more than {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("config drive holds {0} bytes, more than {MAX_TOTAL_BYTES}")]
    TooLarge(usize),
    #[error("config drive path {0:?} is both a file and a directory")]
    Clash(String),
    #[error("network configuration of {0} bytes is more than {MAX_INTERFACES_BYTES}")]
    InterfacesTooLarge(usize),
    #[error("cannot write {path} into the instance root: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigDriveError + '_ {
    move |source| ConfigDriveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a config drive by relative path (`openstack/latest/user_data`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct ConfigDrive {
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The drive as the stored spec holds it: each distinct content once, in
/// base64 (user data may be binary, and every metadata version repeats it).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    files: BTreeMap<String, usize>,
    blobs: Vec<String>,
}

impl From<ConfigDrive> for Stored {
    fn from(d: ConfigDrive) -> Stored {
        let mut index: BTreeMap<&[u8], usize> = BTreeMap::new();
        let mut blobs = Vec::new();
        let mut files = BTreeMap::new();
        for (path, data) in &d.files {
            let i = *index.entry(data.as_slice()).or_insert_with(|| {
                blobs.push(STANDARD.encode(data));
                blobs.len() - 1
            });
            files.insert(path.clone(), i);
        }
        Stored { files, blobs }
    }
}

impl TryFrom<Stored> for ConfigDrive {
    type Error = String;

    fn try_from(s: Stored) -> Result<ConfigDrive, String> {
        let blobs = s
            .blobs
            .iter()
            .map(|b| STANDARD.decode(b.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("config drive content is not base64: {e}"))?;
        let files = s
            .files
            .into_iter()
            .map(|(path, i)| match blobs.get(i) {
                Some(b) => Ok((path, b.clone())),
                None => Err(format!("config drive file {path:?} has no content {i}")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ConfigDrive { files })
    }
}

fn plain_name(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.len() <= 255
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ConfigDrive {
    /// Checks paths and sizes before anything is written.
    pub fn validate(&self) -> Result<(), ConfigDriveError> {
        if self.files.len() > MAX_FILES {
            return Err(ConfigDriveError::TooManyFiles(self.files.len()));
        }
        let total: usize = self.files.values().map(Vec::len).sum();
        if total > MAX_TOTAL_BYTES {
            return Err(ConfigDriveError::TooLarge(total));
        }
        for path in self.files.keys() {
            let parts: Vec<&str> = path.split('/').collect();
            if parts.len() > MAX_DEPTH || !parts.iter().all(|c| plain_name(c)) {
                return Err(ConfigDriveError::BadPath(path.clone()));
            }
            // A file may not also be a directory of another file.
            let mut prefix = String::new();
            for c in &parts[..parts.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(c);
                if self.files.contains_key(&prefix) {
                    return Err(ConfigDriveError::Clash(prefix));
                }
            }
        }
        Ok(())
    }

    /// Writes the tree as `<instance dir>/config-drive` (replacing what was
    /// there): directories 0755, files 0644, all owned by `uid:gid` (the
    /// container's root on the host). Returns the tree's path.
    pub fn write(
        &self,
        instance_dir: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, ConfigDriveError> {
        self.validate()?;
        let target = instance_dir.join(DRIVE_DIR);
        let tmp = instance_dir.join(format!(".{DRIVE_DIR}.new"));
        remove_tree(&tmp)?;
        let result = self.write_tree(&tmp, uid, gid);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        remove_tree(&target)?;
        fs::rename(&tmp, &target).map_err(io_at(&target))?;
        Ok(target)
    }

    fn write_tree(&self, root: &Path, uid: u32, gid: u32) -> Result<(), ConfigDriveError> {
        let mkdir = |d: &Path| -> Result<(), ConfigDriveError> {
            match fs::DirBuilder::new().mode(0o755).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(io_at(d)(e)),
            }
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(io_at(d))?;
            std::os::unix::fs::lchown(d, Some(uid), Some(gid)).map_err(io_at(d))
        };
        mkdir(root)?;
        for (rel, data) in &self.files {
            let path = root.join(rel);
            let mut dir = root.to_path_buf();
            for c in rel
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map(|x| x.1)
                .unwrap_or(&[])
            {
                dir.push(c);
                mkdir(&dir)?;
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_at(&path))?;
            f.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io_at(&path))?;
            f.write_all(data).map_err(io_at(&path))?;
            drop(f);
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io_at(&path))?;
        }
        Ok(())
    }
}

/// Removes the tree at `path` if there is one.
pub fn remove_tree(path: &Path) -> Result<(), ConfigDriveError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_at(path)),
        Ok(_) => fs::remove_file(path).map_err(io_at(path)),
    }
}

/// Writes `text` as `<rootfs>/etc/network/interfaces` (mode 0644, owned by
/// `uid:gid`), replacing the image's file. The root comes from an image
/// anyone may upload: no symbolic link on the way is followed (`etc` or
/// `etc/network` being one is refused; the file itself is replaced, not
/// written through), and missing directories are made (0755).
pub fn inject_interfaces(
    rootfs: &Path,
    text: &str,
    uid: u32,
    gid: u32,
) -> Result<(), ConfigDriveError> {
    if text.len() > MAX_INTERFACES_BYTES {
        return Err(ConfigDriveError::InterfacesTooLarge(text.len()));
    }
    let mut dir = rootfs.to_path_buf();
    for c in ["etc", "network"] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ConfigDriveError::Unsafe {
                    path: dir,
                    reason: "not a directory (a symbolic link is never followed)".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&dir)
                    .map_err(io_at(&dir))?;
                std::os::unix::fs::lchown(&dir, Some(uid), Some(gid)).map_err(io_at(&dir))?;
            }
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    let path = rootfs.join(INTERFACES_PATH);
    let tmp = dir.join(format!(".interfaces.corral.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_at(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io_at(&tmp))?;
        drop(f);
        std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid)).map_err(io_at(&tmp))?;
        // A rename replaces whatever is at the name (a link too), never
        // writing through it.
        fs::rename(&tmp, &path).map_err(io_at(&path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn drive(files: &[(&str, &[u8])]) -> ConfigDrive {
        ConfigDrive {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "openstack/../../x",
            "openstack//x",
            "openstack/./x",
            "",
            "a/b\n",
            "a/ b",
        ] {
            assert!(
                matches!(
                    drive(&[(bad, b"x")]).validate(),
                    Err(ConfigDriveError::BadPath(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            drive(&[("a", b"x"), ("a/b", b"y")]).validate(),
            Err(ConfigDriveError::Clash(_))
        ));
        let big = vec![0u8; MAX_TOTAL_BYTES + 1];
        assert!(matches!(
            drive(&[("a", &big)]).validate(),
            Err(ConfigDriveError::TooLarge(_))
        ));
        drive(&[
            ("openstack/latest/meta_data.json", b"{}"),
            ("openstack/content/0000", b""),
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn stored_spec_form_keeps_binary_content_once() {
        let d = drive(&[
            ("openstack/2012-08-10/user_data", &[0x1f, 0x8b, 0, 0xff]),
            ("openstack/latest/meta_data.json", b"{}"),
            ("openstack/latest/user_data", &[0x1f, 0x8b, 0, 0xff]),
        ]);
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(
            text,
            r#"{"files":{"openstack/2012-08-10/user_data":0,"openstack/latest/meta_data.json":1,"openstack/latest/user_data":0},"blobs":["H4sA/w==","e30="]}"#
        );
        assert_eq!(serde_json::from_str::<ConfigDrive>(&text).unwrap(), d);
        for bad in [
            r#"{"files":{"a":1},"blobs":["e30="]}"#,
            r#"{"files":{"a":0},"blobs":["not base64!"]}"#,
        ] {
            assert!(serde_json::from_str::<ConfigDrive>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn written_tree_has_modes_and_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let d = drive(&[
            ("openstack/latest/meta_data.json", b"{}"),
            ("openstack/latest/user_data", b"#!/bin/sh\n"),
        ]);
        let path = d.write(tmp.path(), uid, gid).unwrap();
        let f = path.join("openstack/latest/user_data");
        assert_eq!(fs::read(&f).unwrap(), b"#!/bin/sh\n");
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(
            fs::metadata(path.join("openstack")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::metadata(&f).unwrap().uid(), uid);
        // A second write replaces the tree: files gone from the content go.
        drive(&[("openstack/latest/meta_data.json", b"{\"a\": 1}")])
            .write(tmp.path(), uid, gid)
            .unwrap();
        assert!(!f.exists());
        assert!(!tmp.path().join(".config-drive.new").exists());
    }

    #[test]
    fn interfaces_never_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let root = tmp.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        // No /etc at all: made.
        inject_interfaces(&root, "auto lo\n", uid, gid).unwrap();
        assert_eq!(
            fs::read_to_string(root.join(INTERFACES_PATH)).unwrap(),
            "auto lo\n"
        );
        // The file a link to a host file: the link is replaced, the host file kept.
        let host = tmp.path().join("host-file");
        fs::write(&host, "host").unwrap();
        fs::remove_file(root.join(INTERFACES_PATH)).unwrap();
        std::os::unix::fs::symlink(&host, root.join(INTERFACES_PATH)).unwrap();
        inject_interfaces(&root, "auto lo\n", uid, gid).unwrap();
        assert_eq!(fs::read_to_string(&host).unwrap(), "host");
        assert!(!fs::symlink_metadata(root.join(INTERFACES_PATH))
            .unwrap()
            .is_symlink());
        // /etc/network a link out of the root: refused.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::remove_dir_all(root.join("etc/network")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/network")).unwrap();
        assert!(matches!(
            inject_interfaces(&root, "x", uid, gid),
            Err(ConfigDriveError::Unsafe { .. })
        ));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert!(matches!(
            inject_interfaces(&root, &"x".repeat(MAX_INTERFACES_BYTES + 1), uid, gid),
            Err(ConfigDriveError::InterfacesTooLarge(_))
        ));
    }
}
