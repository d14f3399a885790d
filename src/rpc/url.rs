//! `transport_url` parsing as `oslo_messaging.TransportURL.parse` does it.
//!
//! `rabbit://user:pass@host:port,user2:pass2@host2:port2/vhost?opt=value`

use std::fmt;

use percent_encoding::percent_decode_str;

/// Port used when a host gives none.
pub const DEFAULT_PORT: u16 = 5672;

/// Errors from [`TransportUrl::parse`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("no scheme specified in '{0}'")]
    NoScheme(String),
    #[error("unsupported transport '{0}', only rabbit is implemented")]
    UnsupportedTransport(String),
    #[error("invalid port '{port}' for host '{host}'")]
    InvalidPort { host: String, port: String },
    #[error("malformed host '{0}'")]
    MalformedHost(String),
}

/// One broker of a transport url. Credentials are kept as given (`None` when absent).
#[derive(Clone, PartialEq, Eq)]
pub struct TransportHost {
    pub hostname: String,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for TransportHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHost")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A parsed `transport_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportUrl {
    /// The scheme: `rabbit` (or its alias `kombu`).
    pub transport: String,
    /// Brokers in the order given (the connector shuffles them once, as oslo does).
    pub hosts: Vec<TransportHost>,
    /// The path after the first `/`, unquoted; `None` without a path.
    pub virtual_host: Option<String>,
    /// Query options (`parse_qs`, repeated keys joined with `,`), in order of appearance.
    pub query: Vec<(String, String)>,
}

impl fmt::Debug for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportUrl")
            .field("transport", &self.transport)
            .field("hosts", &self.hosts)
            .field("virtual_host", &self.virtual_host)
            .field("query", &self.query)
            .finish()
    }
}

impl fmt::Display for TransportUrl {
    /// The url with passwords masked, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.transport)?;
        for (i, h) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if let Some(u) = &h.username {
                f.write_str(u)?;
                if h.password.is_some() {
                    f.write_str(":***")?;
                }
                f.write_str("@")?;
            }
            if h.hostname.contains(':') {
                write!(f, "[{}]", h.hostname)?;
            } else {
                f.write_str(&h.hostname)?;
            }
            if let Some(p) = h.port {
                write!(f, ":{p}")?;
            }
        }
        if let Some(v) = &self.virtual_host {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A broker with oslo's defaults applied: what the connector dials.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.username, self.host, self.port)
    }
}

fn unquote(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn unquote_plus(s: &str) -> String {
    unquote(&s.replace('+', " "))
}

/// `oslo_utils.netutils.parse_host_port`.
fn parse_host_port(address: &str) -> Result<(String, Option<u16>), UrlError> {
    let parse_port = |host: &str, port: &str| -> Result<u16, UrlError> {
        port.trim()
            .parse::<u16>()
            .map_err(|_| UrlError::InvalidPort {
                host: host.to_string(),
                port: port.to_string(),
            })
    };
    if let Some(rest) = address.strip_prefix('[') {
        let mut parts = rest.split(']');
        let host = parts.next().unwrap_or_default().to_string();
        let after = parts
            .next()
            .ok_or_else(|| UrlError::MalformedHost(address.into()))?;
        if parts.next().is_some() {
            return Err(UrlError::MalformedHost(address.into()));
        }
        if after.contains(':') {
            let port = after.split(':').nth(1).unwrap_or_default();
            let p = parse_port(&host, port)?;
            Ok((host, Some(p)))
        } else {
            Ok((host, None))
        }
    } else if address.matches(':').count() == 1 {
        let (host, port) = address.split_once(':').unwrap_or((address, ""));
        let p = parse_port(host, port)?;
        Ok((host.to_string(), Some(p)))
    } else {
        Ok((address.to_string(), None))
    }
}

impl TransportUrl {
    /// Parse like `TransportURL.parse` (urlparse, `parse_qs`, netloc split on `,`).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = match url.split_once(':') {
            Some((s, r))
                if !s.is_empty()
                    && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                (s.to_ascii_lowercase(), r)
            }
            _ => return Err(UrlError::NoScheme(url.to_string())),
        };
        if scheme != "rabbit" && scheme != "kombu" {
            return Err(UrlError::UnsupportedTransport(scheme));
        }
        // urlparse: drop the fragment, split the query, then the netloc.
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, query_str) = rest.split_once('?').unwrap_or((rest, ""));
        let (netloc, path) = match rest.strip_prefix("//") {
            Some(after) => match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            },
            None => ("", rest),
        };

        let mut query: Vec<(String, String)> = Vec::new();
        for pair in query_str.split(['&', ';']) {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            // parse_qs drops blank values (keep_blank_values=False)
            if v.is_empty() {
                continue;
            }
            let (k, v) = (unquote_plus(k), unquote_plus(v));
            match query.iter_mut().find(|(key, _)| *key == k) {
                Some((_, existing)) => {
                    existing.push(',');
                    existing.push_str(&v);
                }
                None => query.push((k, v)),
            }
        }

        let virtual_host = path.strip_prefix('/').map(unquote);

        let mut hosts = Vec::new();
        for host in netloc.split(',') {
            if host.is_empty() {
                continue;
            }
            let mut hostname = host;
            let mut username = None;
            let mut password = None;
            if let Some((userinfo, h)) = host.rsplit_once('@') {
                hostname = h;
                match userinfo.split_once(':') {
                    Some((u, p)) => {
                        username = Some(unquote(u));
                        password = Some(unquote(p));
                    }
                    None => username = Some(unquote(userinfo)),
                }
            }
            let (hostname, port) = parse_host_port(hostname)?;
            hosts.push(TransportHost {
                hostname,
                port,
                username,
                password,
            });
        }
        let with = hosts.iter().filter(|h| h.password.is_some()).count();
        if with > 0 && with < hosts.len() {
            tracing::warn!("all hosts must be set with username/password or not at the same time");
        }
        Ok(TransportUrl {
            transport: scheme,
            hosts,
            virtual_host,
            query,
        })
    }

    /// The vhost the broker sees: empty or absent means the default vhost `/`.
    pub fn vhost(&self) -> &str {
        match self.virtual_host.as_deref() {
            None | Some("") => "/",
            Some(v) => v,
        }
    }

    /// Brokers with oslo's defaults (`_transform_transport_url`): port 5672, and with no
    /// host at all `guest:guest@localhost`.
    pub fn brokers(&self) -> Vec<BrokerAddress> {
        if self.hosts.is_empty() {
            return vec![BrokerAddress {
                host: "localhost".into(),
                port: DEFAULT_PORT,
                username: "guest".into(),
                password: "guest".into(),
            }];
        }
        self.hosts
            .iter()
            .map(|h| BrokerAddress {
                host: h.hostname.clone(),
                port: h.port.unwrap_or(DEFAULT_PORT),
                username: h.username.clone().unwrap_or_default(),
                password: h.password.clone().unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str, port: Option<u16>, u: Option<&str>, p: Option<&str>) -> TransportHost {
        TransportHost {
            hostname: h.into(),
            port,
            username: u.map(Into::into),
            password: p.map(Into::into),
        }
    }

    #[test]
    fn single_host_defaults() {
        let u = TransportUrl::parse("rabbit://guest:guest@127.0.0.1:5672/").unwrap();
        assert_eq!(u.transport, "rabbit");
        assert_eq!(
            u.hosts,
            vec![host("127.0.0.1", Some(5672), Some("guest"), Some("guest"))]
        );
        assert_eq!(u.virtual_host.as_deref(), Some(""));
        assert_eq!(u.vhost(), "/");
        let b = u.brokers();
        assert_eq!(b[0].port, 5672);
    }

    #[test]
    fn failover_hosts_and_default_port() {
        let u = TransportUrl::parse("rabbit://a:b@h1:5673,c:d@h2/nova").unwrap();
        assert_eq!(
            u.hosts,
            vec![
                host("h1", Some(5673), Some("a"), Some("b")),
                host("h2", None, Some("c"), Some("d"))
            ]
        );
        assert_eq!(u.vhost(), "nova");
        assert_eq!(u.brokers()[1].port, DEFAULT_PORT);
    }

    #[test]
    fn percent_encoded_credentials() {
        let u = TransportUrl::parse("rabbit://us%40er:p%3Aa%2Fs%2Cs%25@host:5672//").unwrap();
        assert_eq!(u.hosts[0].username.as_deref(), Some("us@er"));
        assert_eq!(u.hosts[0].password.as_deref(), Some("p:a/s,s%"));
        // "//" -> vhost "/"
        assert_eq!(u.virtual_host.as_deref(), Some("/"));
        assert_eq!(u.vhost(), "/");
        // unencoded '@' in the user part: rsplit on the last '@', ':' split once
        let u = TransportUrl::parse("rabbit://a@b:c:d@host").unwrap();
        assert_eq!(u.hosts[0].username.as_deref(), Some("a@b"));
        assert_eq!(u.hosts[0].password.as_deref(), Some("c:d"));
        // '+' is not a space in credentials (unquote, not unquote_plus)
        let u = TransportUrl::parse("rabbit://a+b:c+d@host").unwrap();
        assert_eq!(u.hosts[0].password.as_deref(), Some("c+d"));
    }

    #[test]
    fn vhost_semantics() {
        assert_eq!(
            TransportUrl::parse("rabbit://h").unwrap().virtual_host,
            None
        );
        assert_eq!(TransportUrl::parse("rabbit://h").unwrap().vhost(), "/");
        assert_eq!(TransportUrl::parse("rabbit://h/").unwrap().vhost(), "/");
        assert_eq!(TransportUrl::parse("rabbit://h/%2F").unwrap().vhost(), "/");
        assert_eq!(
            TransportUrl::parse("rabbit://h/a%2Fb").unwrap().vhost(),
            "a/b"
        );
    }

    #[test]
    fn no_host_means_guest_localhost() {
        let u = TransportUrl::parse("rabbit://").unwrap();
        assert!(u.hosts.is_empty());
        let b = u.brokers();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].host, "localhost");
        assert_eq!(b[0].username, "guest");
        assert_eq!(b[0].password, "guest");
    }

    #[test]
    fn ipv6_hosts() {
        let u = TransportUrl::parse("rabbit://u:p@[::1]:5671,u:p@[fe80::1]/").unwrap();
        assert_eq!(u.hosts[0].hostname, "::1");
        assert_eq!(u.hosts[0].port, Some(5671));
        assert_eq!(u.hosts[1].hostname, "fe80::1");
        assert_eq!(u.hosts[1].port, None);
    }

    #[test]
    fn query_options() {
        let u = TransportUrl::parse(
            "rabbit://h/?ssl=1&heartbeat_timeout_threshold=30&empty=&x=a&x=b+c",
        )
        .unwrap();
        assert_eq!(
            u.query,
            vec![
                ("ssl".to_string(), "1".to_string()),
                ("heartbeat_timeout_threshold".to_string(), "30".to_string()),
                ("x".to_string(), "a,b c".to_string()),
            ]
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            TransportUrl::parse("//h"),
            Err(UrlError::NoScheme(_))
        ));
        assert!(matches!(
            TransportUrl::parse("kafka://h"),
            Err(UrlError::UnsupportedTransport(_))
        ));
        assert!(matches!(
            TransportUrl::parse("rabbit://h:notaport/"),
            Err(UrlError::InvalidPort { .. })
        ));
        assert!(TransportUrl::parse("kombu://h").is_ok());
    }

    #[test]
    fn display_masks_password() {
        let u = TransportUrl::parse("rabbit://u:secret@h:1,u:secret@[::1]/v").unwrap();
        let s = u.to_string();
        assert!(!s.contains("secret"));
        assert_eq!(s, "rabbit://u:***@h:1,u:***@[::1]/v");
        assert!(!format!("{u:?}").contains("secret"));
    }
}
