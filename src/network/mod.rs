//! Standalone networks, what LXD users get from `lxdbr0`: a named Linux
//! bridge holding the subnet's first address, a dnsmasq of its own for DHCP
//! and DNS, and NAT to the host through an nftables table of its own. Kept
//! in the store and re-created at start-up (after a host reboot the bridge,
//! the table and dnsmasq are gone; after a daemon crash dnsmasq is still
//! there and is replaced, never doubled).
//!
//! A leaf: it knows nothing of instances. Frontends turn a network into a
//! `driver::VifSpec` plugged into its bridge, and tell it who uses it.

pub mod cidr;
pub mod host;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use cidr::Ipv4Cidr;

use crate::store::{NetworkRecord, Store, StoreError};

/// Errors of network operations.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Invalid(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store failure")]
    Store(#[source] StoreError),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetworkError {
    /// The message with its chain of causes.
    pub fn full_message(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    }
}

impl From<StoreError> for NetworkError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { kind, name } => {
                NetworkError::Conflict(format!("{kind} {name} already exists"))
            }
            other => NetworkError::Store(other),
        }
    }
}

/// The subnet the default network takes when it is free.
pub const DEFAULT_SUBNET: &str = "10.148.0.0/24";
/// The smallest and largest MTU a network accepts.
pub const MTU_RANGE: (u32, u32) = (576, 9000);

/// One network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Also the bridge's name.
    pub name: String,
    pub subnet: Ipv4Cidr,
    pub nat: bool,
    pub mtu: Option<u32>,
    pub description: String,
    pub created_at: String,
}

impl Network {
    /// The bridge's address with its prefix: `10.148.0.1/24`.
    pub fn gateway_cidr(&self) -> String {
        format!("{}/{}", self.subnet.gateway(), self.subnet.prefix())
    }

    fn from_record(r: &NetworkRecord) -> Result<Network, NetworkError> {
        Ok(Network {
            name: r.name.clone(),
            subnet: r
                .subnet
                .parse()
                .map_err(|e| NetworkError::Invalid(format!("stored network {}: {e}", r.name)))?,
            nat: r.nat,
            mtu: r.mtu,
            description: r.description.clone(),
            created_at: r.created_at.clone(),
        })
    }
}

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    pub name: String,
    /// None: a free `10.x.y.0/24`.
    pub subnet: Option<String>,
    pub nat: bool,
    pub mtu: Option<u32>,
    pub description: String,
}

/// How a network is on the host right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkState {
    pub bridge: bool,
    pub dnsmasq_pid: Option<i32>,
    pub nft_table: bool,
}

/// Checks a network name: it is the bridge's name too, so a Linux interface
/// name (at most 15 characters), lowercase letters, digits and `-`.
pub fn validate_name(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(NetworkError::Invalid(format!(
            "invalid network name {name:?}: 1 to 15 characters, lowercase letters, digits and '-', starting with a letter (it is the bridge's name)"
        )));
    }
    if name == "none" {
        return Err(NetworkError::Invalid(
            "\"none\" is reserved: it asks for an instance without a network".into(),
        ));
    }
    Ok(())
}

/// The named networks of this host.
pub struct Networks {
    store: Store,
    dir: PathBuf,
    /// Serialises creates, deletes and restores.
    lock: tokio::sync::Mutex<()>,
    /// Launches in flight, by network: a network is not deleted under them.
    holds: Arc<Mutex<HashMap<String, usize>>>,
}

/// Keeps a network from being deleted while an instance is being made on it.
pub struct Hold {
    holds: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Ok(mut h) = self.holds.lock() {
            if let Some(n) = h.get_mut(&self.name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    h.remove(&self.name);
                }
            }
        }
    }
}

impl Networks {
    /// Networks kept in `store`, their files under `state_path/networks`.
    pub fn new(store: Store, state_path: &Path) -> Networks {
        Networks {
            store,
            dir: state_path.join("networks"),
            lock: tokio::sync::Mutex::new(()),
            holds: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn net_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn files(&self, name: &str) -> host::DnsmasqFiles {
        host::DnsmasqFiles::in_dir(&self.net_dir(name))
    }

    pub async fn list(&self) -> Result<Vec<Network>, NetworkError> {
        self.store
            .list_networks()
            .await?
            .iter()
            .map(Network::from_record)
            .collect()
    }

    pub async fn get(&self, name: &str) -> Result<Network, NetworkError> {
        let rec = self
            .store
            .find_network(name)
            .await?
            .ok_or_else(|| NetworkError::NotFound(name.to_string()))?;
        Network::from_record(&rec)
    }

    /// How the network is on the host.
    pub async fn state(&self, net: &Network) -> NetworkState {
        NetworkState {
            bridge: host::is_bridge(&net.name),
            dnsmasq_pid: host::dnsmasq_pid(&self.files(&net.name)),
            nft_table: host::nft_table_exists(&net.name).await.unwrap_or(false),
        }
    }

    /// The address the network's DHCP server gave `mac`, if any.
    pub fn lease(&self, network: &str, mac: &str) -> Option<Ipv4Addr> {
        host::lease_of(&self.files(network).leases, mac)
    }

    /// Holds the network for a launch: it must exist, and it is not deleted
    /// until the hold is dropped.
    pub async fn hold(&self, name: &str) -> Result<(Network, Hold), NetworkError> {
        let _g = self.lock.lock().await;
        let net = self.get(name).await?;
        if let Ok(mut h) = self.holds.lock() {
            *h.entry(name.to_string()).or_insert(0) += 1;
        }
        Ok((
            net,
            Hold {
                holds: self.holds.clone(),
                name: name.to_string(),
            },
        ))
    }

    /// Why `subnet` cannot be used: an overlap with another network or with
    /// a host route or address (the bridge `own`'s routes aside).
    async fn check_subnet(&self, subnet: &Ipv4Cidr, own: Option<&str>) -> Result<(), NetworkError> {
        subnet.usable().map_err(NetworkError::Invalid)?;
        for other in self.list().await? {
            if Some(other.name.as_str()) != own && other.subnet.overlaps(subnet) {
                return Err(NetworkError::Conflict(format!(
                    "subnet {subnet} overlaps network {} ({})",
                    other.name, other.subnet
                )));
            }
        }
        let skip: Vec<&str> = own.into_iter().collect();
        for r in host::host_routes(&skip).await? {
            if r.dst.overlaps(subnet) {
                return Err(NetworkError::Conflict(format!(
                    "subnet {subnet} overlaps the host's route or address {} on {}",
                    r.dst, r.dev
                )));
            }
        }
        Ok(())
    }

    /// A free `10.x.y.0/24`, starting from a random one.
    async fn pick_subnet(&self) -> Result<Ipv4Cidr, NetworkError> {
        let mut taken: Vec<Ipv4Cidr> = self.list().await?.iter().map(|n| n.subnet).collect();
        taken.extend(host::host_routes(&[]).await?.into_iter().map(|r| r.dst));
        first_free(&taken, rand::random()).ok_or_else(|| {
            NetworkError::Conflict("no free 10.x.y.0/24 subnet left on this host".into())
        })
    }

    /// Creates a network: checked first (name, subnet, MTU), then kept in
    /// the store and made on the host; a failure on the host undoes both.
    pub async fn create(&self, req: &NetworkRequest) -> Result<Network, NetworkError> {
        validate_name(&req.name)?;
        if let Some(m) = req.mtu {
            if !(MTU_RANGE.0..=MTU_RANGE.1).contains(&m) {
                return Err(NetworkError::Invalid(format!(
                    "mtu must be between {} and {}, got {m}",
                    MTU_RANGE.0, MTU_RANGE.1
                )));
            }
        }
        let subnet = match &req.subnet {
            Some(s) => Some(
                s.parse::<Ipv4Cidr>()
                    .map_err(|e| NetworkError::Invalid(format!("invalid subnet: {e}")))?,
            ),
            None => None,
        };
        let _g = self.lock.lock().await;
        if self.store.find_network(&req.name).await?.is_some() {
            return Err(NetworkError::Conflict(format!(
                "network {} already exists",
                req.name
            )));
        }
        if host::link_exists(&req.name) {
            return Err(NetworkError::Conflict(format!(
                "a host interface named {} exists: pick another network name",
                req.name
            )));
        }
        let subnet = match subnet {
            Some(s) => {
                self.check_subnet(&s, None).await?;
                s
            }
            None => self.pick_subnet().await?,
        };
        let net = Network {
            name: req.name.clone(),
            subnet,
            nat: req.nat,
            mtu: req.mtu,
            description: req.description.clone(),
            created_at: Store::timestamp(),
        };
        self.store
            .insert_network(&NetworkRecord {
                name: net.name.clone(),
                subnet: net.subnet.to_string(),
                nat: net.nat,
                mtu: net.mtu,
                description: net.description.clone(),
                created_at: net.created_at.clone(),
            })
            .await?;
        if let Err(e) = self.setup(&net).await {
            self.teardown(&net.name).await;
            let _ = self.store.delete_network(&net.name).await;
            return Err(e);
        }
        tracing::info!(network = %net.name, subnet = %net.subnet, nat = net.nat, "network created");
        Ok(net)
    }

    /// Makes (or re-makes) everything of a network on the host.
    async fn setup(&self, net: &Network) -> Result<(), NetworkError> {
        let dir = self.net_dir(&net.name);
        std::fs::create_dir_all(&dir).map_err(|source| NetworkError::Io {
            path: dir.clone(),
            source,
        })?;
        host::ensure_bridge(&net.name, &net.subnet, net.mtu).await?;
        if net.nat {
            host::enable_forwarding()?;
        }
        host::apply_nft(&net.name, &net.subnet, net.nat).await?;
        host::start_dnsmasq(&net.name, &net.subnet, net.mtu, &self.files(&net.name)).await?;
        Ok(())
    }

    /// Removes everything of a network from the host, whatever is there.
    async fn teardown(&self, name: &str) -> Vec<NetworkError> {
        let mut errors = Vec::new();
        host::stop_dnsmasq(&self.files(name)).await;
        if let Err(e) = host::delete_nft(name).await {
            errors.push(e);
        }
        if let Err(e) = host::delete_bridge(name).await {
            errors.push(e);
        }
        let dir = self.net_dir(name);
        if dir.exists() {
            if let Err(source) = std::fs::remove_dir_all(&dir) {
                errors.push(NetworkError::Io { path: dir, source });
            }
        }
        errors
    }

    /// Deletes a network nobody uses; `users` are the instances plugged
    /// into it (the caller knows them).
    pub async fn delete(&self, name: &str, users: &[String]) -> Result<(), NetworkError> {
        let _g = self.lock.lock().await;
        self.get(name).await?;
        if !users.is_empty() {
            return Err(NetworkError::Conflict(format!(
                "network {name} is in use by {}: delete those instances first",
                users.join(", ")
            )));
        }
        let launching = self
            .holds
            .lock()
            .map(|h| h.get(name).copied().unwrap_or(0))
            .unwrap_or(0);
        if launching > 0 {
            return Err(NetworkError::Conflict(format!(
                "network {name} is in use by {launching} instance(s) being created"
            )));
        }
        if let Some(e) = self.teardown(name).await.into_iter().next() {
            return Err(e);
        }
        self.store.delete_network(name).await?;
        tracing::info!(network = %name, "network deleted");
        Ok(())
    }

    /// Re-creates every stored network on the host (bridge, table, a fresh
    /// dnsmasq); returns those that failed, each with its error.
    pub async fn restore(&self) -> Result<Vec<(String, NetworkError)>, NetworkError> {
        let _g = self.lock.lock().await;
        let mut failed = Vec::new();
        for net in self.list().await? {
            if host::link_exists(&net.name) && !host::is_bridge(&net.name) {
                failed.push((
                    net.name.clone(),
                    NetworkError::Conflict(format!(
                        "host interface {} exists and is not a bridge",
                        net.name
                    )),
                ));
                continue;
            }
            match self.setup(&net).await {
                Ok(()) => {
                    tracing::info!(network = %net.name, subnet = %net.subnet, "network restored")
                }
                Err(e) => failed.push((net.name.clone(), e)),
            }
        }
        Ok(failed)
    }

    /// Makes the default network `name` unless it exists: on `subnet` when
    /// given, else on [`DEFAULT_SUBNET`] when that is free, else on a free
    /// `10.x.y.0/24`.
    pub async fn ensure_default(
        &self,
        name: &str,
        subnet: Option<Ipv4Cidr>,
    ) -> Result<Network, NetworkError> {
        if let Ok(net) = self.get(name).await {
            return Ok(net);
        }
        let subnet = match subnet {
            Some(s) => s,
            None => {
                let preferred: Ipv4Cidr = DEFAULT_SUBNET.parse().map_err(NetworkError::Invalid)?;
                if self.check_subnet(&preferred, None).await.is_ok() {
                    preferred
                } else {
                    self.pick_subnet().await?
                }
            }
        };
        self.create(&NetworkRequest {
            name: name.to_string(),
            subnet: Some(subnet.to_string()),
            nat: true,
            mtu: None,
            description: "the default network".into(),
        })
        .await
    }
}

/// The first `10.x.y.0/24` from `start` on (`x.y` = `start`, wrapping)
/// that overlaps nothing `taken`.
fn first_free(taken: &[Ipv4Cidr], start: u16) -> Option<Ipv4Cidr> {
    (0..=u16::MAX).find_map(|i| {
        let [x, y] = start.wrapping_add(i).to_be_bytes();
        let c = Ipv4Cidr::containing(Ipv4Addr::new(10, x, y, 0), 24);
        (!taken.iter().any(|t| t.overlaps(&c))).then_some(c)
    })
}

/// A random MAC in the range LXD uses (`00:16:3e`, Xen's OUI).
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("00:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["corralbr0", "a", "net-1", "abcdefghijklmno"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "none",
            "Br0",
            "0br",
            "a b",
            "a/b",
            "abcdefghijklmnop",
            "net-",
            "a_b",
            "..",
        ] {
            assert!(
                matches!(validate_name(bad), Err(NetworkError::Invalid(_))),
                "{bad:?}"
            );
        }
        let taken: Vec<Ipv4Cidr> = ["10.148.0.0/23", "10.148.3.0/24", "0.0.0.0/8"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let start = u16::from_be_bytes([148, 0]);
        assert_eq!(
            first_free(&taken, start).map(|c| c.to_string()),
            Some("10.148.2.0/24".into())
        );
        assert_eq!(
            first_free(&taken, u16::MAX).map(|c| c.to_string()),
            Some("10.255.255.0/24".into())
        );
        let all: Vec<Ipv4Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(first_free(&all, 7), None);
        let m = random_mac();
        assert!(m.starts_with("00:16:3e:") && m.len() == 17, "{m}");
    }
}
