//! IPv4 subnets as networks use them: parsing, overlap, the gateway (first
//! host) and the DHCP range (every other host).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet in CIDR form, its address being the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The subnet `addr/prefix`; `addr` must be the network address.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Cidr, String> {
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is above 32"));
        }
        let c = Ipv4Cidr { addr, prefix };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(format!(
                "{addr}/{prefix} has host bits set: the subnet is {}/{prefix}",
                Ipv4Addr::from(u32::from(addr) & c.mask())
            ));
        }
        Ok(c)
    }

    /// The subnet holding `addr` (host bits cleared).
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let prefix = prefix.min(32);
        let mask = mask_of(prefix);
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        mask_of(self.prefix)
    }

    /// The netmask in dotted form.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    fn last(&self) -> u32 {
        self.first() | !self.mask()
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == self.first()
    }

    /// The gateway: the subnet's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first().saturating_add(1))
    }

    /// The addresses DHCP hands out: every host after the gateway, up to the
    /// one before the broadcast address.
    pub fn dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        (
            Ipv4Addr::from(self.first().saturating_add(2)),
            Ipv4Addr::from(self.last().saturating_sub(1)),
        )
    }

    /// Whether the subnet is fit for a network: a gateway and at least one
    /// address to hand out (a /30 or larger).
    pub fn usable(&self) -> Result<(), String> {
        if self.prefix > 30 {
            return Err(format!(
                "{self} is too small: a network needs at least a /30 (a gateway and an address to hand out)"
            ));
        }
        if self.prefix < 8 {
            return Err(format!("{self} is too large: use a /8 or smaller"));
        }
        let a = self.addr.octets()[0];
        if a == 0 || a == 127 || a >= 224 {
            return Err(format!(
                "{self} is not a unicast range a network can use (0/8, 127/8, multicast and reserved are refused)"
            ));
        }
        if self.addr.octets()[..2] == [169, 254] {
            return Err(format!("{self} is link-local"));
        }
        Ok(())
    }
}

fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Ipv4Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 subnet in CIDR form (10.148.0.0/24)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{p:?} is not a prefix length"));
        }
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a prefix length"))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let c: Ipv4Cidr = "10.148.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.148.0.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 148, 0, 1));
        assert_eq!(
            c.dhcp_range(),
            (Ipv4Addr::new(10, 148, 0, 2), Ipv4Addr::new(10, 148, 0, 254))
        );
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        for bad in [
            "10.148.0.1/24",
            "10.148.0.0",
            "10.148.0.0/33",
            "10.148.0.0/",
            "10.148.0.0/+4",
            "x/24",
            "10.148.0.0/024",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert!("10.1.0.0/31".parse::<Ipv4Cidr>().unwrap().usable().is_err());
        assert!("127.0.0.0/24"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .usable()
            .is_err());
        assert!("224.0.0.0/24"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .usable()
            .is_err());
        assert!("10.0.0.0/7".parse::<Ipv4Cidr>().unwrap().usable().is_err());
        assert!("10.1.0.0/30".parse::<Ipv4Cidr>().unwrap().usable().is_ok());
    }

    #[test]
    fn overlap() {
        let a: Ipv4Cidr = "10.148.0.0/24".parse().unwrap();
        let b: Ipv4Cidr = "10.148.0.128/25".parse().unwrap();
        let c: Ipv4Cidr = "10.148.1.0/24".parse().unwrap();
        let d: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(d.overlaps(&a) && a.overlaps(&d));
        assert!(a.contains(Ipv4Addr::new(10, 148, 0, 77)));
        assert!(!a.contains(Ipv4Addr::new(10, 148, 1, 77)));
        assert_eq!(
            Ipv4Cidr::containing(Ipv4Addr::new(192, 0, 2, 9), 24).to_string(),
            "192.0.2.0/24"
        );
    }
}
