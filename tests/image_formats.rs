//! Image formats through the real binary: a zstd root tarball, a squashfs, a
//! bare-filesystem raw, a GPT-partitioned raw and an MBR-partitioned qcow2
//! are built from the busybox root with the real tools (mksquashfs,
//! mkfs.ext4, sfdisk, qemu-img), imported with `corral image import` and
//! launched; `exec` works in each. Hostile disk images are refused with a
//! clear error, leaving nothing in the cache, no mount and no loop device.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busybox_tarball, Daemon};

fn sh(script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (with a reason) when a disk tool is missing.
macro_rules! require_disk_tools {
    () => {
        for tool in [
            "mksquashfs",
            "mkfs.ext4",
            "sfdisk",
            "qemu-img",
            "losetup",
            "zstd",
        ] {
            if !have(tool) {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{tool} is missing (scripts/install-deps.sh installs it)");
                }
                eprintln!("SKIPPED: {tool} is missing (scripts/install-deps.sh installs it)");
                return;
            }
        }
    };
}

/// The busybox root, unpacked with owners kept.
fn busybox_root(work: &Path) -> PathBuf {
    let root = work.join("root");
    std::fs::create_dir(&root).unwrap();
    sh(&format!(
        "tar -xpzf {} -C {}",
        busybox_tarball().display(),
        root.display()
    ));
    root
}

/// An ext4 filesystem image of `dir`.
fn ext4_of(dir: &Path, out: &Path) {
    sh(&format!(
        "truncate -s 24M {o} && mkfs.ext4 -q -F -d {d} {o}",
        o = out.display(),
        d = dir.display()
    ));
}

/// A disk with a table of `label` (gpt or dos): a first partition holding an
/// empty ext4 filesystem (not a root), then the root's filesystem.
fn partitioned(work: &Path, root: &Path, label: &str, out: &Path) {
    let empty = work.join(format!("empty-{label}"));
    std::fs::create_dir_all(empty.join("boot")).unwrap();
    let p1 = work.join(format!("p1-{label}.img"));
    let p2 = work.join(format!("p2-{label}.img"));
    ext4_of(&empty, &p1);
    ext4_of(root, &p2);
    // 24 MiB = 49152 sectors each, after a 1 MiB gap; 1 MiB at the end for
    // the backup GPT
    sh(&format!(
        "truncate -s 50M {o}\n\
         printf 'label: {label}\\nstart=2048, size=49152, type=L\\nstart=51200, size=49152, type=L\\n' \
           | sfdisk -q {o}\n\
         dd if={p1} of={o} bs=1M seek=1 conv=notrunc status=none\n\
         dd if={p2} of={o} bs=1M seek=25 conv=notrunc status=none",
        o = out.display(),
        p1 = p1.display(),
        p2 = p2.display(),
    ));
}

/// Images the cache holds, and the cache's other entries.
fn cache_entries(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.state.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Mounts under the daemon's state, and loop devices backed by its files.
fn held(d: &Daemon) -> (Vec<String>, String) {
    let state = d.state.to_string_lossy().into_owned();
    // the mount point (5th field) or the source (a loop device's backing
    // file is not in mountinfo; losetup below tells those)
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp.starts_with(&format!("{state}/images")))
        })
        .map(str::to_string)
        .collect();
    let out = Command::new("losetup").args(["-l", "-n"]).output().unwrap();
    let loops = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&state))
        .collect::<Vec<_>>()
        .join("\n");
    (mounts, loops)
}

fn import_and_run(d: &Daemon, file: &Path, alias: &str, format: &str) {
    d.ok(&["image", "import", file.to_str().unwrap(), "--alias", alias]);
    let img: serde_json::Value = d.client().get(&format!("/1.0/images/{alias}")).unwrap();
    assert_eq!(img["properties"]["format"], format, "{alias}: {img}");
    let name = format!("from-{alias}");
    d.ok(&["launch", alias, &name]);
    let out = d.exec(&name, "cat /etc/inittab | head -1; id -u; ls /etc/init.d");
    assert!(out.contains("::sysinit:/etc/init.d/rcS"), "{alias}: {out}");
    assert!(out.contains("rcS"), "{alias}: {out}");
    // the copy kept owners and modes
    let owner = d.exec(&name, "stat -c %u:%g:%a /bin/busybox");
    assert_eq!(owner.trim(), "0:0:755", "{alias}: {owner}");
}

#[test]
fn every_format_boots() {
    require_host!();
    require_disk_tools!();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = busybox_root(w);
    let d = Daemon::start();

    // zstd root tarball
    let zst = w.join("root.tar.zst");
    sh(&format!(
        "gzip -dc {} | zstd -q -o {}",
        busybox_tarball().display(),
        zst.display()
    ));
    import_and_run(&d, &zst, "zst", "tar.zst");

    // squashfs
    let sqfs = w.join("root.squashfs");
    sh(&format!(
        "mksquashfs {} {} -noappend -quiet -no-progress",
        root.display(),
        sqfs.display()
    ));
    import_and_run(&d, &sqfs, "sqfs", "squashfs");

    // a bare ext4 filesystem as a raw image
    let bare = w.join("bare.raw");
    ext4_of(&root, &bare);
    import_and_run(&d, &bare, "bare", "raw");

    // a GPT disk whose root is the second partition
    let gpt = w.join("gpt.raw");
    partitioned(w, &root, "gpt", &gpt);
    import_and_run(&d, &gpt, "gpt", "raw");

    // qcow2 of an MBR disk, root on the second partition
    let mbr = w.join("mbr.raw");
    partitioned(w, &root, "dos", &mbr);
    let qcow2 = w.join("disk.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {} {}",
        mbr.display(),
        qcow2.display()
    ));
    import_and_run(&d, &qcow2, "qcow2", "qcow2");

    // nothing but the five images is left: no temporary raw, no mount
    // point, no mount, no loop device
    let entries = cache_entries(&d);
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert!(entries.iter().all(|e| e.len() == 64), "{entries:?}");
    for e in &entries {
        let inner: Vec<String> = std::fs::read_dir(d.state.join("images").join(e))
            .unwrap()
            .flatten()
            .map(|x| x.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "rootfs" && n != "shifted")
            .collect();
        assert!(inner.is_empty(), "{e}: {inner:?}");
    }
    let (mounts, loops) = held(&d);
    assert!(mounts.is_empty(), "{mounts:?}");
    assert!(loops.is_empty(), "{loops}");
}

#[test]
fn hostile_disk_images_are_refused() {
    require_host!();
    require_disk_tools!();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let root = busybox_root(w);
    let d = Daemon::start();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();

    // a qcow2 whose backing file is a host file
    let backing = w.join("backing.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -b /etc/passwd -F raw {}",
        backing.display()
    ));
    // a qcow2 with an external data file
    let data_file = w.join("data-file.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -o data_file={}/host-data.raw {} 16M",
        w.display(),
        data_file.display()
    ));
    let data_before = std::fs::read(w.join("host-data.raw")).unwrap();
    let data_mtime = std::fs::metadata(w.join("host-data.raw"))
        .unwrap()
        .modified()
        .unwrap();
    // a qcow2 whose disk is larger than max_image_bytes (8 GiB by default):
    // compressed clusters would let a small file expand past it on convert
    let huge = w.join("huge.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 {} 9G",
        huge.display()
    ));
    // a GPT disk cut short: its root partition runs past the end
    let cut = w.join("cut.raw");
    partitioned(w, &root, "gpt", &cut);
    sh(&format!("truncate -s 40M {}", cut.display()));
    // an MBR entry pointing far past the end
    let far = w.join("far.raw");
    let mut mbr = vec![0u8; 1 << 20];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&4_000_000u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    std::fs::write(&far, &mbr).unwrap();
    // a "qcow2" that is not one (named so, qcow2 magic, garbage after)
    let fake = w.join("fake.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend(std::iter::repeat_n(0x41u8, 4096));
    std::fs::write(&fake, &bytes).unwrap();
    // a file named as a disk image holding something else
    let text = w.join("text.raw");
    std::fs::write(&text, "not a disk at all\n".repeat(100)).unwrap();
    // a disk whose filesystem holds no root
    let noroot = w.join("noroot.raw");
    let empty = w.join("just-data");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("data"), "x").unwrap();
    ext4_of(&empty, &noroot);

    // an ext4 superblock magic on garbage: the kernel refuses to mount it
    let corrupt = w.join("corrupt.raw");
    let mut bytes = vec![0x5au8; 4 << 20];
    bytes[1080] = 0x53;
    bytes[1081] = 0xef;
    std::fs::write(&corrupt, &bytes).unwrap();

    for (file, want) in [
        (&corrupt, "not mountable: ext4 at byte 0"),
        (&backing, "backing file"),
        (&data_file, "external data file"),
        (&huge, "over max_image_bytes"),
        (&cut, "past the end"),
        (&far, "past the end"),
        (&fake, "qcow2"),
        (&text, "unrecognised image"),
        (&noroot, "no root filesystem"),
    ] {
        let err = d.fails(&["image", "import", file.to_str().unwrap(), "--alias", "evil"]);
        assert!(err.contains(want), "{}: {err}", file.display());
        assert_eq!(
            cache_entries(&d),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
        let (mounts, loops) = held(&d);
        assert!(mounts.is_empty(), "{}: {mounts:?}", file.display());
        assert!(loops.is_empty(), "{}: {loops}", file.display());
    }
    let images: Vec<serde_json::Value> = d.client().get("/1.0/images?recursion=1").unwrap();
    assert!(images.is_empty(), "{images:?}");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    // the external data file was neither read into the cache nor written
    let host_data = w.join("host-data.raw");
    assert_eq!(std::fs::read(&host_data).unwrap(), data_before);
    assert_eq!(
        std::fs::metadata(&host_data).unwrap().modified().unwrap(),
        data_mtime
    );
    assert!(d.pid().is_some(), "the daemon died");
}
