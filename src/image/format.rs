//! Image formats: what an image file is, told by its content (magic bytes,
//! never a name or a claim), and what a format declared by Glance's
//! `disk_format`/`container_format` allows it to be. A file whose content is
//! not what was declared is refused before anything reads it further.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// How a root tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

/// What an image file holds, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A tar archive of the root filesystem, maybe compressed.
    Tarball(Compression),
    /// A squashfs filesystem holding the root.
    Squashfs,
    /// A qcow2 disk image (converted to raw with `qemu-img`).
    Qcow2,
    /// A raw disk: an MBR or GPT partition table, or a bare filesystem.
    Raw,
}

impl Format {
    /// The name used in image properties and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Tarball(Compression::None) => "tar",
            Format::Tarball(Compression::Gzip) => "tar.gz",
            Format::Tarball(Compression::Xz) => "tar.xz",
            Format::Tarball(Compression::Zstd) => "tar.zst",
            Format::Squashfs => "squashfs",
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the uploader said an image is (Glance's `disk_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// `disk_format=qcow2`: the content must be qcow2.
    Qcow2,
    /// `disk_format=raw`: a raw disk, a bare filesystem, a squashfs, or (as
    /// corral has always taken them) a root tarball. Never qcow2.
    Raw,
    /// `container_format=compressed`: a compressed root tarball.
    Compressed,
}

impl Declared {
    /// The declaration of a Glance image. Formats corral cannot boot (vmdk,
    /// vhd, iso, ova, docker...) are refused before any download.
    pub fn from_glance(
        disk_format: Option<&str>,
        container_format: Option<&str>,
    ) -> Result<Option<Declared>, FormatError> {
        let container = container_format.filter(|s| !s.is_empty());
        let disk = disk_format.filter(|s| !s.is_empty());
        let refused = || FormatError::NotSupported {
            disk_format: crate::text::printable(disk.unwrap_or(""), 40),
            container_format: crate::text::printable(container.unwrap_or(""), 40),
        };
        let compressed = match container {
            None | Some("bare") => false,
            Some("compressed") => true,
            Some(_) => return Err(refused()),
        };
        let declared = match disk {
            None => None,
            Some("raw") => Some(Declared::Raw),
            Some("qcow2") => Some(Declared::Qcow2),
            Some(_) => return Err(refused()),
        };
        Ok(match (compressed, declared) {
            (true, Some(Declared::Qcow2)) => return Err(refused()),
            (true, _) => Some(Declared::Compressed),
            (false, d) => d,
        })
    }

    /// Whether content of `found` fits this declaration.
    pub fn allows(&self, found: Format) -> bool {
        match self {
            Declared::Qcow2 => found == Format::Qcow2,
            Declared::Raw => found != Format::Qcow2,
            Declared::Compressed => matches!(
                found,
                Format::Tarball(Compression::Gzip | Compression::Xz | Compression::Zstd)
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Declared::Qcow2 => "qcow2",
            Declared::Raw => "raw",
            Declared::Compressed => "compressed",
        }
    }
}

/// Why an image's format was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read image {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "unrecognised image: not a tar archive (plain, gzip, xz or zstd), squashfs, qcow2 \
         or raw disk image"
    )]
    Unrecognised,
    #[error("unsupported image compression {0}")]
    UnsupportedCompression(&'static str),
    #[error("image declared as {declared} but its content is {found}")]
    Mismatch {
        declared: &'static str,
        found: &'static str,
    },
    #[error(
        "image format disk_format={disk_format} container_format={container_format} is not \
         supported: use disk_format raw or qcow2 with container_format bare (or compressed \
         for a compressed root tarball)"
    )]
    NotSupported {
        disk_format: String,
        container_format: String,
    },
}

/// Bytes read from the start of a file to tell its format: enough to reach
/// the btrfs superblock magic at 64 KiB + 64.
const PROBE_BYTES: usize = 0x10048;

/// The filesystem types corral mounts (read-only) from a disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
    Btrfs,
    Squashfs,
}

impl FsType {
    /// The kernel's name of the type, as given to mount(2).
    pub fn kernel_name(&self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
            FsType::Squashfs => "squashfs",
        }
    }
}

/// The filesystem whose first bytes are `head` (at least [`PROBE_BYTES`]
/// long for btrfs to be seen), by superblock magic.
pub fn filesystem_of(head: &[u8]) -> Option<FsType> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"hsqs") {
        Some(FsType::Squashfs)
    } else if at(1080, &[0x53, 0xef]) {
        // ext2 and ext3 are mounted by the ext4 driver
        Some(FsType::Ext4)
    } else if at(0, b"XFSB") {
        Some(FsType::Xfs)
    } else if at(0x10040, b"_BHRfS_M") {
        Some(FsType::Btrfs)
    } else {
        None
    }
}

/// Reads up to [`PROBE_BYTES`] from the start of `file`.
pub fn read_head(file: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(PROBE_BYTES);
    file.take(PROBE_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The format of the bytes `head` (the start of a file).
pub fn detect_bytes(head: &[u8]) -> Result<Format, FormatError> {
    if head.starts_with(b"QFI\xfb") {
        return Ok(Format::Qcow2);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Format::Tarball(Compression::Gzip));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Ok(Format::Tarball(Compression::Xz));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Format::Tarball(Compression::Zstd));
    }
    if head.starts_with(b"BZh") {
        return Err(FormatError::UnsupportedCompression("bzip2"));
    }
    if head.get(257..262) == Some(b"ustar") {
        return Ok(Format::Tarball(Compression::None));
    }
    if filesystem_of(head) == Some(FsType::Squashfs) {
        return Ok(Format::Squashfs);
    }
    let boot_signature = head.get(510..512) == Some(&[0x55, 0xaa]);
    if boot_signature || filesystem_of(head).is_some() {
        return Ok(Format::Raw);
    }
    Err(FormatError::Unrecognised)
}

/// The format of the file at `path`, by content, checked against what was
/// declared.
pub fn detect(path: &Path, declared: Option<Declared>) -> Result<Format, FormatError> {
    let io = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let head = read_head(&mut f).map_err(io)?;
    let found = detect_bytes(&head)?;
    if let Some(d) = declared {
        if !d.allows(found) {
            return Err(FormatError::Mismatch {
                declared: d.name(),
                found: found.name(),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(off: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; PROBE_BYTES];
        v[off..off + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(detect_bytes(b"QFI\xfb\0\0\0\x03").unwrap(), Format::Qcow2);
        assert_eq!(
            detect_bytes(&[0x1f, 0x8b, 8, 0]).unwrap(),
            Format::Tarball(Compression::Gzip)
        );
        assert_eq!(
            detect_bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(),
            Format::Tarball(Compression::Zstd)
        );
        assert_eq!(
            detect_bytes(&with(257, b"ustar")).unwrap(),
            Format::Tarball(Compression::None)
        );
        assert_eq!(detect_bytes(&with(0, b"hsqs")).unwrap(), Format::Squashfs);
        assert_eq!(
            detect_bytes(&with(510, &[0x55, 0xaa])).unwrap(),
            Format::Raw
        );
        assert_eq!(
            detect_bytes(&with(1080, &[0x53, 0xef])).unwrap(),
            Format::Raw
        );
        assert_eq!(
            detect_bytes(&with(0x10040, b"_BHRfS_M")).unwrap(),
            Format::Raw
        );
        assert!(matches!(
            detect_bytes(b"this is not an image"),
            Err(FormatError::Unrecognised)
        ));
        assert!(matches!(
            detect_bytes(b"BZh91AY"),
            Err(FormatError::UnsupportedCompression("bzip2"))
        ));
    }

    #[test]
    fn declarations_are_checked_against_content() {
        let d = |disk, container| Declared::from_glance(disk, container);
        assert_eq!(
            d(Some("qcow2"), Some("bare")).unwrap(),
            Some(Declared::Qcow2)
        );
        assert_eq!(d(Some("raw"), Some("bare")).unwrap(), Some(Declared::Raw));
        assert_eq!(
            d(Some("raw"), Some("compressed")).unwrap(),
            Some(Declared::Compressed)
        );
        assert_eq!(d(None, None).unwrap(), None);
        for (disk, container) in [
            ("vmdk", "bare"),
            ("vhd", "bare"),
            ("iso", "bare"),
            ("raw", "ova"),
            ("raw", "docker"),
            ("qcow2", "compressed"),
        ] {
            assert!(
                d(Some(disk), Some(container)).is_err(),
                "{disk}/{container}"
            );
        }
        // a qcow2 is never taken as raw (its backing file would be read as data
        // by a reader that trusted the claim), and a "qcow2" must be one
        assert!(!Declared::Raw.allows(Format::Qcow2));
        assert!(!Declared::Qcow2.allows(Format::Raw));
        assert!(!Declared::Qcow2.allows(Format::Tarball(Compression::Gzip)));
        assert!(Declared::Raw.allows(Format::Tarball(Compression::Gzip)));
        assert!(Declared::Raw.allows(Format::Squashfs));
        assert!(!Declared::Compressed.allows(Format::Tarball(Compression::None)));
    }
}
