//! Device names (Nova's: a prefix and the first 11 characters of the port
//! id, at most 14 characters) and the checks of what names a device.

use std::collections::BTreeSet;

use super::NetdevError;

/// Nova's `NIC_NAME_LEN` (14) less the 3-character prefix.
const ID_CHARS: usize = 11;
/// Linux's `IFNAMSIZ` less the terminating NUL.
const IFNAME_MAX: usize = 15;

/// The first 11 characters of an interface id.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(ID_CHARS) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// The host end of the veth pair: `tap<id11>`, as Nova names taps.
pub fn tap_name(id: &str) -> String {
    format!("tap{}", short_id(id))
}

/// The hybrid plug's per-interface Linux bridge.
pub fn qbr_name(id: &str) -> String {
    format!("qbr{}", short_id(id))
}

/// The hybrid plug's veth end in the `qbr` bridge.
pub fn qvb_name(id: &str) -> String {
    format!("qvb{}", short_id(id))
}

/// The hybrid plug's veth end on the OVS bridge.
pub fn qvo_name(id: &str) -> String {
    format!("qvo{}", short_id(id))
}

/// Interface ids: a Neutron port uuid or corral's own id; letters, digits,
/// `-` and `_` (their first 11 characters name host devices).
pub fn validate_id(id: &str) -> Result<(), NetdevError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(NetdevError::Invalid(format!(
            "invalid interface id {id:?}: use 1-255 letters, digits, '-' and '_'"
        )))
    }
}

/// A unicast Ethernet address, `xx:xx:xx:xx:xx:xx`.
pub fn validate_mac(mac: &str) -> Result<(), NetdevError> {
    let bad = || NetdevError::Invalid(format!("invalid MAC address {mac:?}"));
    let octets: Vec<&str> = mac.split(':').collect();
    if octets.len() != 6 {
        return Err(bad());
    }
    let mut bytes = [0u8; 6];
    for (b, o) in bytes.iter_mut().zip(&octets) {
        if o.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(o, 16).map_err(|_| bad())?;
    }
    if bytes[0] & 1 == 1 {
        return Err(NetdevError::Invalid(format!(
            "invalid MAC address {mac:?}: a multicast address"
        )));
    }
    if bytes == [0; 6] {
        return Err(NetdevError::Invalid(format!(
            "invalid MAC address {mac:?}: all zero"
        )));
    }
    Ok(())
}

/// An Ethernet MTU the kernel takes (68, IPv4's minimum, to 65535).
pub fn validate_mtu(mtu: u32) -> Result<(), NetdevError> {
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(NetdevError::Invalid(format!(
            "invalid MTU {mtu}: must be between 68 and 65535"
        )))
    }
}

/// An interface name: 1-15 letters, digits, `-`, `_` and `.` (a subset of
/// what Linux takes, safe in `ip -batch` lines), not `.`, `..` or `lo`.
pub fn validate_ifname(name: &str) -> Result<(), NetdevError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !matches!(name, "." | ".." | "lo");
    if ok {
        Ok(())
    } else {
        Err(NetdevError::Invalid(format!(
            "invalid interface name {name:?}: use 1-15 letters, digits, '-', '_' and '.'"
        )))
    }
}

/// The host end's MAC: the instance's with the first octet `fe`, as
/// libvirt sets taps, so a bridge never takes the instance's address.
pub fn host_mac(mac: &str) -> String {
    match mac.get(2..) {
        Some(rest) => format!("fe{rest}"),
        None => mac.to_string(),
    }
}

/// The names inside the instance of interfaces in order, each the one
/// asked for or else `eth<position>`, or the next free `ethN` where that
/// is taken (by a named one, or by `taken`: what the namespace has).
pub fn inside_names(
    wanted: &[Option<String>],
    taken: &BTreeSet<String>,
) -> Result<Vec<String>, NetdevError> {
    let mut used = taken.clone();
    for name in wanted.iter().flatten() {
        validate_ifname(name)?;
        if !used.insert(name.clone()) {
            return Err(NetdevError::Invalid(format!(
                "interface name {name} is used twice in the instance"
            )));
        }
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (i, w) in wanted.iter().enumerate() {
        let name = match w {
            Some(n) => n.clone(),
            None => {
                let first = format!("eth{i}");
                let name = if used.contains(&first) {
                    (0..)
                        .map(|n| format!("eth{n}"))
                        .find(|n| !used.contains(n))
                        .unwrap_or(first)
                } else {
                    first
                };
                used.insert(name.clone());
                name
            }
        };
        out.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_names() {
        let id = "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";
        assert_eq!(short_id(id), "3f2a1b4c-5d");
        assert_eq!(tap_name(id), "tap3f2a1b4c-5d");
        assert_eq!(qbr_name(id), "qbr3f2a1b4c-5d");
        assert_eq!(qvb_name(id), "qvb3f2a1b4c-5d");
        assert_eq!(qvo_name(id), "qvo3f2a1b4c-5d");
        assert!(tap_name(id).len() <= IFNAME_MAX);
        assert_eq!(tap_name("p1"), "tapp1");
        assert_eq!(host_mac("fa:16:3e:01:02:03"), "fe:16:3e:01:02:03");
    }

    #[test]
    fn ids_macs_mtus_and_names() {
        for good in ["3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8", "p1", "a_b"] {
            validate_id(good).unwrap();
        }
        for bad in ["", "a b", "a/b", "tap:1", "é", &"x".repeat(256)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        for good in ["fa:16:3e:00:00:01", "02:AB:cd:00:00:ff"] {
            validate_mac(good).unwrap();
        }
        for bad in [
            "",
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:01:02",
            "fa-16-3e-00-00-01",
            "fa:16:3e:00:00:0g",
            "fa:16:3e:00:0:001",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            assert!(validate_mac(bad).is_err(), "{bad}");
        }
        validate_mtu(68).unwrap();
        validate_mtu(65535).unwrap();
        assert!(validate_mtu(67).is_err());
        assert!(validate_mtu(65536).is_err());
        for good in ["eth0", "net-1", "x"] {
            validate_ifname(good).unwrap();
        }
        for bad in [
            "",
            "lo",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a#b",
            "a\"b",
            &"e".repeat(16),
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inside_names_by_position_or_next_free() {
        let none = BTreeSet::new();
        assert_eq!(
            inside_names(&[None, None], &none).unwrap(),
            ["eth0", "eth1"]
        );
        assert_eq!(
            inside_names(&[Some("eth1".into()), None, None], &none).unwrap(),
            ["eth1", "eth0", "eth2"]
        );
        assert_eq!(
            inside_names(&[None, Some("data".into())], &none).unwrap(),
            ["eth0", "data"]
        );
        let taken = BTreeSet::from(["eth0".to_string(), "eth1".to_string()]);
        assert_eq!(inside_names(&[None], &taken).unwrap(), ["eth2"]);
        assert!(inside_names(&[Some("x".into()), Some("x".into())], &none).is_err());
        assert!(inside_names(&[Some("eth0".into())], &taken).is_err());
        assert!(inside_names(&[Some("lo".into())], &none).is_err());
    }
}
