//! A Nova instance's ephemeral disk, from the block device mappings of
//! `build_and_run_instance` (nova-api makes them from the flavor:
//! `source_type=blank`, `destination_type=local`; swap has `guest_format =
//! swap`).
//!
//! corral gives an instance at most one ephemeral disk, mounted at `/mnt`:
//! several ephemeral mappings are refused. A swap mapping is not a disk
//! here: the flavor's `swap` is the instance's swap limit on top of its
//! memory (see docs/flavors.md).

use crate::driver::{Limits, DEFAULT_EPHEMERAL_FORMAT};
use crate::nova::objects::block_device::BlockDeviceMapping;
use crate::nova::objects::flavor::Flavor;

/// An ephemeral disk corral cannot give.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EphemeralError {
    #[error("{0} ephemeral disks asked for: corral gives an instance at most one (at /mnt)")]
    Several(usize),
    #[error("ephemeral disk of {0} GB: the size must be above 0")]
    BadSize(i64),
    #[error("ephemeral disk: {0}")]
    Format(String),
}

const SWAP: &str = "swap";

fn is_ephemeral(b: &BlockDeviceMapping) -> bool {
    b.source_type.as_str() == Some("blank")
        && b.destination_type.as_str() == Some("local")
        && b.guest_format.as_str() != Some(SWAP)
}

/// The ephemeral disk (bytes, filesystem) of an instance: its one
/// ephemeral mapping's size (`volume_size`, else the flavor's
/// `ephemeral_gb`) and `guest_format` (else `default_format`, else ext4); the
/// flavor's `ephemeral_gb` where the message carries no such mapping.
pub fn disk(
    flavor: &Flavor,
    bdms: &[BlockDeviceMapping],
    default_format: Option<&str>,
) -> Result<Option<(u64, String)>, EphemeralError> {
    let eph: Vec<&BlockDeviceMapping> = bdms.iter().filter(|b| is_ephemeral(b)).collect();
    let flavor_gb = flavor.ephemeral_gb.get().copied().unwrap_or(0);
    let (gb, format) = match eph.as_slice() {
        [] if flavor_gb == 0 => return Ok(None),
        [] => (flavor_gb, None),
        [one] => (
            one.volume_size.get().copied().unwrap_or(flavor_gb),
            one.guest_format.as_str().filter(|f| !f.is_empty()),
        ),
        several => return Err(EphemeralError::Several(several.len())),
    };
    if gb <= 0 {
        return Err(EphemeralError::BadSize(gb));
    }
    let format = format
        .or(default_format)
        .unwrap_or(DEFAULT_EPHEMERAL_FORMAT)
        .to_string();
    let bytes = (gb as u64) << 30;
    // What the driver will check: refused here, before anything is made.
    Limits {
        ephemeral_bytes: Some(bytes),
        ephemeral_format: Some(format.clone()),
        ..Limits::default()
    }
    .validate()
    .map_err(|e| EphemeralError::Format(e.to_string()))?;
    Ok(Some((bytes, format)))
}

/// Puts the ephemeral disk into an instance's limits.
pub fn apply(limits: &mut Limits, disk: Option<(u64, String)>) {
    if let Some((bytes, format)) = disk {
        limits.ephemeral_bytes = Some(bytes);
        limits.ephemeral_format = Some(format);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nova::fields::Field;

    fn flavor(eph: i64) -> Flavor {
        Flavor {
            ephemeral_gb: Field::Set(eph),
            ..Flavor::default()
        }
    }

    fn bdm(
        source: &str,
        dest: &str,
        format: Option<&str>,
        size: Option<i64>,
    ) -> BlockDeviceMapping {
        BlockDeviceMapping {
            source_type: Field::Set(source.into()),
            destination_type: Field::Set(dest.into()),
            guest_format: format.map_or(Field::Null, |f| Field::Set(f.into())),
            volume_size: size.map_or(Field::Null, Field::Set),
            ..BlockDeviceMapping::default()
        }
    }

    #[test]
    fn the_ephemeral_mapping_gives_size_and_format() {
        let root = bdm("image", "local", None, None);
        let eph = bdm("blank", "local", None, Some(2));
        let swap = bdm("blank", "local", Some("swap"), Some(1));
        assert_eq!(
            disk(&flavor(2), &[root.clone(), eph.clone(), swap.clone()], None),
            Ok(Some((2 << 30, "ext4".into())))
        );
        // No mapping for it: the flavor's size.
        assert_eq!(
            disk(&flavor(1), std::slice::from_ref(&root), None),
            Ok(Some((1 << 30, "ext4".into())))
        );
        assert_eq!(disk(&flavor(0), &[root.clone(), swap], None), Ok(None));
        // guest_format, then [DEFAULT] default_ephemeral_format.
        let ext3 = bdm("blank", "local", Some("ext3"), Some(1));
        assert_eq!(
            disk(&flavor(1), &[ext3], Some("ext2")),
            Ok(Some((1 << 30, "ext3".into())))
        );
        assert_eq!(
            disk(&flavor(1), std::slice::from_ref(&eph), Some("ext2")),
            Ok(Some((2 << 30, "ext2".into())))
        );
    }

    #[test]
    fn what_corral_does_not_give_is_refused() {
        let a = bdm("blank", "local", None, Some(1));
        let b = bdm("blank", "local", Some("ext4"), Some(1));
        assert_eq!(
            disk(&flavor(2), &[a.clone(), b], None),
            Err(EphemeralError::Several(2))
        );
        let vfat = bdm("blank", "local", Some("vfat"), Some(1));
        let e = disk(&flavor(1), &[vfat], None).unwrap_err().to_string();
        assert!(e.contains("\"vfat\" is not supported"), "{e}");
        let zero = bdm("blank", "local", None, Some(0));
        assert_eq!(
            disk(&flavor(1), &[zero], None),
            Err(EphemeralError::BadSize(0))
        );
        let mut limits = Limits::default();
        apply(&mut limits, disk(&flavor(1), &[a], None).unwrap());
        assert_eq!(limits.ephemeral_bytes, Some(1 << 30));
        assert_eq!(limits.ephemeral_format.as_deref(), Some("ext4"));
    }
}
