//! The configuration options that change what goes on the wire, with oslo's defaults.
//!
//! `[oslo_messaging_rabbit]` (`impl_rabbit.rabbit_opts`, `amqp.amqp_opts`) and the
//! `[DEFAULT]` options of oslo.messaging that corral reads. Values are parsed the way
//! oslo.config parses them (strict booleans, `min`/`max` checks). The main crate reads
//! the INI file and hands the sections over as string pairs.

use std::collections::HashMap;
use std::time::Duration;

use crate::rpc::url::TransportUrl;

/// Errors from parsing option values.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    #[error("option {name}: unexpected boolean value '{value}'")]
    InvalidBool { name: String, value: String },
    #[error("option {name}: invalid number '{value}'")]
    InvalidNumber { name: String, value: String },
    #[error("option {name}: value {value} out of range ({bound})")]
    OutOfRange {
        name: String,
        value: String,
        bound: String,
    },
    #[error("option {name}: '{value}' is not one of {choices}")]
    InvalidChoice {
        name: String,
        value: String,
        choices: &'static str,
    },
    #[error("transport url option '{0}' is not an option of [oslo_messaging_rabbit]")]
    UnknownUrlOption(String),
    #[error("option {name} is not supported by corral: {reason}")]
    Unsupported { name: String, reason: &'static str },
    #[error("rabbit_quorum_queue and rabbit_ha_queues both enabled, queue type is quorum or ha (mirrored) not both")]
    QuorumAndHa,
}

/// `rabbit_login_method`: the SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoginMethod {
    Plain,
    #[default]
    AmqPlain,
    External,
    RabbitCrDemo,
}

impl LoginMethod {
    /// The name as oslo spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LoginMethod::Plain => "PLAIN",
            LoginMethod::AmqPlain => "AMQPLAIN",
            LoginMethod::External => "EXTERNAL",
            LoginMethod::RabbitCrDemo => "RABBIT-CR-DEMO",
        }
    }
}

/// `kombu_failover_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailoverStrategy {
    #[default]
    RoundRobin,
    Shuffle,
}

/// `[oslo_messaging_rabbit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RabbitOptions {
    pub amqp_durable_queues: bool,
    pub amqp_auto_delete: bool,
    pub rabbit_quorum_queue: bool,
    pub rabbit_transient_quorum_queue: bool,
    pub rabbit_quorum_delivery_limit: i64,
    pub rabbit_quorum_max_memory_length: i64,
    pub rabbit_quorum_max_memory_bytes: i64,
    pub rabbit_ha_queues: bool,
    /// Seconds; sent as `x-expires` in ms on reply and fanout queues (0 = omitted).
    pub rabbit_transient_queues_ttl: u32,
    /// `basic.qos` prefetch on listening channels when > 0.
    pub rabbit_qos_prefetch_count: u16,
    /// Seconds; AMQP heartbeat asked for in `connection.tune-ok`.
    pub heartbeat_timeout_threshold: u16,
    /// Kept for completeness; lapin sends heartbeats at half the negotiated interval.
    pub heartbeat_rate: u32,
    pub ssl: bool,
    pub ssl_version: String,
    pub ssl_ca_file: String,
    pub ssl_cert_file: String,
    pub ssl_key_file: String,
    pub rabbit_login_method: LoginMethod,
    pub rabbit_retry_interval: u64,
    pub rabbit_retry_backoff: u64,
    pub rabbit_interval_max: u64,
    pub kombu_reconnect_delay: f64,
    pub kombu_reconnect_splay: f64,
    pub kombu_missing_consumer_retry_timeout: u64,
    pub kombu_failover_strategy: FailoverStrategy,
    pub enable_cancel_on_failover: bool,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            amqp_durable_queues: false,
            amqp_auto_delete: false,
            rabbit_quorum_queue: false,
            rabbit_transient_quorum_queue: false,
            rabbit_quorum_delivery_limit: 0,
            rabbit_quorum_max_memory_length: 0,
            rabbit_quorum_max_memory_bytes: 0,
            rabbit_ha_queues: false,
            rabbit_transient_queues_ttl: 1800,
            rabbit_qos_prefetch_count: 0,
            heartbeat_timeout_threshold: 60,
            heartbeat_rate: 3,
            ssl: false,
            ssl_version: String::new(),
            ssl_ca_file: String::new(),
            ssl_cert_file: String::new(),
            ssl_key_file: String::new(),
            rabbit_login_method: LoginMethod::AmqPlain,
            rabbit_retry_interval: 1,
            rabbit_retry_backoff: 2,
            rabbit_interval_max: 30,
            kombu_reconnect_delay: 1.0,
            kombu_reconnect_splay: 0.0,
            kombu_missing_consumer_retry_timeout: 60,
            kombu_failover_strategy: FailoverStrategy::RoundRobin,
            enable_cancel_on_failover: false,
        }
    }
}

/// `[DEFAULT]` options of oslo.messaging.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultOptions {
    /// Seconds a `call` waits for its reply (oslo default 60).
    pub rpc_response_timeout: u64,
    /// The exchange of every nova target. oslo's default is `openstack`; nova sets `nova`.
    pub control_exchange: String,
    /// Adds the `oslo_rpc_server_ping` method answering `"pong"`.
    pub rpc_ping_enabled: bool,
    /// How many requests one RPC server runs at once (oslo's threading executor); also
    /// how many casts the compute manager runs at once.
    pub executor_thread_pool_size: usize,
    /// Seconds a stopping server waits for the requests it runs (oslo.service's
    /// option); 0 waits as long as they take.
    pub graceful_shutdown_timeout: u64,
}

impl Default for DefaultOptions {
    fn default() -> Self {
        DefaultOptions {
            rpc_response_timeout: 60,
            control_exchange: "nova".into(),
            rpc_ping_enabled: false,
            executor_thread_pool_size: 64,
            graceful_shutdown_timeout: 60,
        }
    }
}

/// Everything the RPC layer reads from the configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RpcOptions {
    pub default: DefaultOptions,
    pub rabbit: RabbitOptions,
}

/// oslo options of `[oslo_messaging_rabbit]` that have no effect on corral's wire
/// behaviour (pool sizes, deprecated switches, queue-manager naming inputs).
const IGNORED_RABBIT_OPTIONS: &[&str] = &[
    "rpc_conn_pool_size",
    "conn_pool_min_size",
    "conn_pool_ttl",
    "ssl_enforce_hostname_verification",
    "ssl_enforce_fips_mode",
    "direct_mandatory_flag",
    "hostname",
    "processname",
];

fn parse_bool(name: &str, value: &str) -> Result<bool, OptionsError> {
    // oslo_config.types.Boolean: lower-cased, no trimming, four spellings each
    crate::strutil::parse_bool(value).ok_or_else(|| OptionsError::InvalidBool {
        name: name.into(),
        value: value.into(),
    })
}

fn parse_int(
    name: &str,
    value: &str,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<i64, OptionsError> {
    let s = value.trim().replace('_', "");
    let v = s.parse::<i64>().map_err(|_| OptionsError::InvalidNumber {
        name: name.into(),
        value: value.into(),
    })?;
    if let Some(min) = min {
        if v < min {
            return Err(OptionsError::OutOfRange {
                name: name.into(),
                value: value.into(),
                bound: format!("should be greater than or equal to {min}"),
            });
        }
    }
    if let Some(max) = max {
        if v > max {
            return Err(OptionsError::OutOfRange {
                name: name.into(),
                value: value.into(),
                bound: format!("should be less than or equal to {max}"),
            });
        }
    }
    Ok(v)
}

fn parse_float(name: &str, value: &str, min: f64, max: Option<f64>) -> Result<f64, OptionsError> {
    let v = value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| OptionsError::InvalidNumber {
            name: name.into(),
            value: value.into(),
        })?;
    if v < min || max.is_some_and(|m| v > m) {
        return Err(OptionsError::OutOfRange {
            name: name.into(),
            value: value.into(),
            bound: match max {
                Some(m) => format!("{min} to {m}"),
                None => format!(">= {min}"),
            },
        });
    }
    Ok(v)
}

fn unsupported(name: &str, reason: &'static str) -> OptionsError {
    OptionsError::Unsupported {
        name: name.into(),
        reason,
    }
}

impl RabbitOptions {
    /// Build from `[oslo_messaging_rabbit]` key/value pairs over the defaults. Keys that
    /// are not rabbit options are ignored, as oslo.config ignores them in files.
    pub fn from_pairs(pairs: &HashMap<String, String>) -> Result<Self, OptionsError> {
        let mut opts = RabbitOptions::default();
        for (k, v) in pairs {
            if !opts.set(k, v)? {
                tracing::debug!(option = %k, "ignoring unknown [oslo_messaging_rabbit] option");
            }
        }
        opts.validate()?;
        Ok(opts)
    }

    /// Apply the query of a transport url, which overrides the configuration for that
    /// transport (`ConfigOptsProxy`); an unknown key is an error, as in oslo.
    pub fn with_url_query(&self, url: &TransportUrl) -> Result<Self, OptionsError> {
        let mut opts = self.clone();
        for (k, v) in &url.query {
            if !opts.set(k, v)? {
                return Err(OptionsError::UnknownUrlOption(k.clone()));
            }
        }
        opts.validate()?;
        Ok(opts)
    }

    /// Set one option; `Ok(false)` when the name is not a rabbit option at all.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, OptionsError> {
        let n = name;
        match name {
            "amqp_durable_queues" => self.amqp_durable_queues = parse_bool(n, value)?,
            "amqp_auto_delete" => self.amqp_auto_delete = parse_bool(n, value)?,
            "rabbit_quorum_queue" => self.rabbit_quorum_queue = parse_bool(n, value)?,
            "rabbit_transient_quorum_queue" => {
                self.rabbit_transient_quorum_queue = parse_bool(n, value)?
            }
            "rabbit_quorum_delivery_limit" => {
                self.rabbit_quorum_delivery_limit = parse_int(n, value, None, None)?
            }
            "rabbit_quorum_max_memory_length" => {
                self.rabbit_quorum_max_memory_length = parse_int(n, value, None, None)?
            }
            "rabbit_quorum_max_memory_bytes" => {
                self.rabbit_quorum_max_memory_bytes = parse_int(n, value, None, None)?
            }
            "rabbit_ha_queues" => self.rabbit_ha_queues = parse_bool(n, value)?,
            "rabbit_transient_queues_ttl" => {
                self.rabbit_transient_queues_ttl =
                    parse_int(n, value, Some(0), Some(i64::from(u32::MAX / 1000)))? as u32
            }
            "rabbit_qos_prefetch_count" => {
                // oslo only sends basic.qos when > 0; prefetch-count is a short
                let v = parse_int(n, value, None, Some(i64::from(u16::MAX)))?;
                self.rabbit_qos_prefetch_count = v.max(0) as u16;
            }
            "heartbeat_timeout_threshold" => {
                let v = parse_int(n, value, None, Some(i64::from(u16::MAX)))?;
                self.heartbeat_timeout_threshold = v.max(0) as u16;
            }
            "heartbeat_rate" => {
                self.heartbeat_rate =
                    parse_int(n, value, Some(0), Some(i64::from(u32::MAX)))? as u32
            }
            "ssl" => self.ssl = parse_bool(n, value)?,
            "ssl_version" => self.ssl_version = value.into(),
            "ssl_ca_file" => self.ssl_ca_file = value.into(),
            "ssl_cert_file" => self.ssl_cert_file = value.into(),
            "ssl_key_file" => self.ssl_key_file = value.into(),
            "rabbit_login_method" => {
                self.rabbit_login_method = match value {
                    "PLAIN" => LoginMethod::Plain,
                    "AMQPLAIN" => LoginMethod::AmqPlain,
                    "EXTERNAL" => LoginMethod::External,
                    "RABBIT-CR-DEMO" => LoginMethod::RabbitCrDemo,
                    _ => {
                        return Err(OptionsError::InvalidChoice {
                            name: n.into(),
                            value: value.into(),
                            choices: "PLAIN, AMQPLAIN, EXTERNAL, RABBIT-CR-DEMO",
                        })
                    }
                }
            }
            "rabbit_retry_interval" => {
                self.rabbit_retry_interval = parse_int(n, value, Some(1), None)? as u64
            }
            "rabbit_retry_backoff" => {
                self.rabbit_retry_backoff = parse_int(n, value, Some(0), None)? as u64
            }
            "rabbit_interval_max" => {
                self.rabbit_interval_max = parse_int(n, value, Some(1), None)? as u64
            }
            // max is ACK_REQUEUE_EVERY_SECONDS_MAX * 0.9
            "kombu_reconnect_delay" => {
                self.kombu_reconnect_delay = parse_float(n, value, 0.0, Some(4.5))?
            }
            "kombu_reconnect_splay" => {
                self.kombu_reconnect_splay = parse_float(n, value, 0.0, None)?
            }
            "kombu_missing_consumer_retry_timeout" | "kombu_reconnect_timeout" => {
                self.kombu_missing_consumer_retry_timeout =
                    parse_int(n, value, Some(0), None)? as u64
            }
            "kombu_failover_strategy" => {
                self.kombu_failover_strategy = match value {
                    "round-robin" => FailoverStrategy::RoundRobin,
                    "shuffle" => FailoverStrategy::Shuffle,
                    _ => {
                        return Err(OptionsError::InvalidChoice {
                            name: n.into(),
                            value: value.into(),
                            choices: "round-robin, shuffle",
                        })
                    }
                }
            }
            "enable_cancel_on_failover" => self.enable_cancel_on_failover = parse_bool(n, value)?,
            "rabbit_stream_fanout" => {
                if parse_bool(n, value)? {
                    return Err(unsupported(n, "stream fanout queues are not implemented"));
                }
            }
            "use_queue_manager" => {
                if parse_bool(n, value)? {
                    return Err(unsupported(n, "queue-manager names are not implemented"));
                }
            }
            "kombu_compression" => {
                if !value.trim().is_empty() {
                    return Err(unsupported(n, "body compression is not implemented"));
                }
            }
            _ if IGNORED_RABBIT_OPTIONS.contains(&name) => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Cross-option checks oslo does when it builds a connection.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.rabbit_quorum_queue && self.rabbit_ha_queues {
            return Err(OptionsError::QuorumAndHa);
        }
        Ok(())
    }

    /// Durable flag of the control exchange and topic queues
    /// (`Connection.durable`: `amqp_durable_queues or rabbit_quorum_queue`).
    pub fn durable(&self) -> bool {
        self.amqp_durable_queues || self.rabbit_quorum_queue
    }

    /// First reconnect interval, step and ceiling (`rabbit_retry_*`, `rabbit_interval_max`).
    pub fn retry_intervals(&self) -> RetryIntervals {
        RetryIntervals::new(
            self.rabbit_retry_interval,
            self.rabbit_retry_backoff,
            self.rabbit_interval_max,
        )
    }

    /// `kombu_reconnect_delay` as a duration.
    pub fn reconnect_delay(&self) -> Duration {
        Duration::from_secs_f64(self.kombu_reconnect_delay.max(0.0))
    }
}

impl DefaultOptions {
    /// Build from `[DEFAULT]` pairs; keys that are not ours are ignored.
    pub fn from_pairs(pairs: &HashMap<String, String>) -> Result<Self, OptionsError> {
        let mut opts = DefaultOptions::default();
        for (k, v) in pairs {
            match k.as_str() {
                "rpc_response_timeout" => {
                    opts.rpc_response_timeout = parse_int(k, v, Some(0), None)? as u64
                }
                "control_exchange" => opts.control_exchange = v.clone(),
                "rpc_ping_enabled" => opts.rpc_ping_enabled = parse_bool(k, v)?,
                "executor_thread_pool_size" => {
                    opts.executor_thread_pool_size = parse_int(k, v, Some(1), None)? as usize
                }
                "graceful_shutdown_timeout" => {
                    opts.graceful_shutdown_timeout = parse_int(k, v, Some(0), None)? as u64
                }
                _ => {}
            }
        }
        Ok(opts)
    }

    /// `graceful_shutdown_timeout` as a limit; `None` for no limit (0).
    pub fn graceful_shutdown(&self) -> Option<Duration> {
        match self.graceful_shutdown_timeout {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// `rpc_response_timeout` as a duration.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_secs(self.rpc_response_timeout)
    }
}

impl RpcOptions {
    /// Build from the `[DEFAULT]` and `[oslo_messaging_rabbit]` sections.
    pub fn from_sections(
        default: &HashMap<String, String>,
        rabbit: &HashMap<String, String>,
    ) -> Result<Self, OptionsError> {
        Ok(RpcOptions {
            default: DefaultOptions::from_pairs(default)?,
            rabbit: RabbitOptions::from_pairs(rabbit)?,
        })
    }
}

/// kombu's `retry_over_time` intervals: `start, start+step, ...` capped at `max`
/// (`fxrange(start, max + start, step, repeatlast=True)` clamped to `max`).
#[derive(Debug, Clone)]
pub struct RetryIntervals {
    cur: f64,
    step: f64,
    stop: f64,
    max: f64,
}

impl RetryIntervals {
    pub fn new(start: u64, step: u64, max: u64) -> Self {
        RetryIntervals {
            cur: start as f64,
            step: step as f64,
            stop: (max + start) as f64,
            max: max as f64,
        }
    }
}

impl Iterator for RetryIntervals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let v = if self.cur <= self.stop {
            let v = self.cur;
            self.cur += self.step;
            v
        } else {
            self.cur - self.step
        };
        Some(Duration::from_secs_f64(v.min(self.max).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_oslo() {
        let o = RpcOptions::default();
        assert!(!o.rabbit.amqp_durable_queues);
        assert!(!o.rabbit.amqp_auto_delete);
        assert_eq!(o.rabbit.rabbit_transient_queues_ttl, 1800);
        assert_eq!(o.rabbit.rabbit_qos_prefetch_count, 0);
        assert_eq!(o.rabbit.heartbeat_timeout_threshold, 60);
        assert_eq!(o.rabbit.heartbeat_rate, 3);
        assert_eq!(o.rabbit.rabbit_login_method, LoginMethod::AmqPlain);
        assert_eq!(o.rabbit.rabbit_retry_interval, 1);
        assert_eq!(o.rabbit.rabbit_retry_backoff, 2);
        assert_eq!(o.rabbit.rabbit_interval_max, 30);
        assert_eq!(o.rabbit.kombu_reconnect_delay, 1.0);
        assert_eq!(o.rabbit.kombu_missing_consumer_retry_timeout, 60);
        assert_eq!(o.default.rpc_response_timeout, 60);
        assert_eq!(o.default.control_exchange, "nova");
        assert!(!o.rabbit.durable());
    }

    #[test]
    fn strict_booleans() {
        for t in ["true", "True", "1", "on", "YES"] {
            let o = RabbitOptions::from_pairs(&pairs(&[("ssl", t)])).unwrap();
            assert!(o.ssl, "{t}");
        }
        for f in ["false", "0", "Off", "no"] {
            let o = RabbitOptions::from_pairs(&pairs(&[("ssl", f)])).unwrap();
            assert!(!o.ssl, "{f}");
        }
        for bad in ["y", "t", "2", "", " true", "enabled"] {
            assert!(
                matches!(
                    RabbitOptions::from_pairs(&pairs(&[("amqp_durable_queues", bad)])),
                    Err(OptionsError::InvalidBool { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numbers_and_ranges() {
        let o = RabbitOptions::from_pairs(&pairs(&[
            ("rabbit_transient_queues_ttl", " 60 "),
            ("rabbit_qos_prefetch_count", "10"),
            ("kombu_reconnect_delay", "0.5"),
        ]))
        .unwrap();
        assert_eq!(o.rabbit_transient_queues_ttl, 60);
        assert_eq!(o.rabbit_qos_prefetch_count, 10);
        assert_eq!(o.kombu_reconnect_delay, 0.5);
        assert!(matches!(
            RabbitOptions::from_pairs(&pairs(&[("rabbit_retry_interval", "0")])),
            Err(OptionsError::OutOfRange { .. })
        ));
        assert!(matches!(
            RabbitOptions::from_pairs(&pairs(&[("kombu_reconnect_delay", "5")])),
            Err(OptionsError::OutOfRange { .. })
        ));
        assert!(matches!(
            RabbitOptions::from_pairs(&pairs(&[("rabbit_transient_queues_ttl", "x")])),
            Err(OptionsError::InvalidNumber { .. })
        ));
    }

    #[test]
    fn login_method_choices() {
        let o = RabbitOptions::from_pairs(&pairs(&[("rabbit_login_method", "PLAIN")])).unwrap();
        assert_eq!(o.rabbit_login_method, LoginMethod::Plain);
        assert!(matches!(
            RabbitOptions::from_pairs(&pairs(&[("rabbit_login_method", "plain")])),
            Err(OptionsError::InvalidChoice { .. })
        ));
    }

    #[test]
    fn quorum_makes_topic_queues_durable() {
        let o = RabbitOptions::from_pairs(&pairs(&[("rabbit_quorum_queue", "true")])).unwrap();
        assert!(o.durable());
        assert_eq!(
            RabbitOptions::from_pairs(&pairs(&[
                ("rabbit_quorum_queue", "true"),
                ("rabbit_ha_queues", "true")
            ])),
            Err(OptionsError::QuorumAndHa)
        );
    }

    #[test]
    fn url_query_overrides_and_rejects_unknown() {
        let base = RabbitOptions::default();
        let url = TransportUrl::parse("rabbit://h/?ssl=1&heartbeat_timeout_threshold=30").unwrap();
        let o = base.with_url_query(&url).unwrap();
        assert!(o.ssl);
        assert_eq!(o.heartbeat_timeout_threshold, 30);
        let url = TransportUrl::parse("rabbit://h/?bogus=1").unwrap();
        assert_eq!(
            base.with_url_query(&url),
            Err(OptionsError::UnknownUrlOption("bogus".into()))
        );
        // known but irrelevant options are accepted
        let url = TransportUrl::parse("rabbit://h/?rpc_conn_pool_size=5").unwrap();
        assert!(base.with_url_query(&url).is_ok());
    }

    #[test]
    fn unknown_file_options_are_ignored_and_unsupported_ones_fail() {
        assert!(RabbitOptions::from_pairs(&pairs(&[("whatever", "1")])).is_ok());
        assert!(matches!(
            RabbitOptions::from_pairs(&pairs(&[("rabbit_stream_fanout", "true")])),
            Err(OptionsError::Unsupported { .. })
        ));
        assert!(RabbitOptions::from_pairs(&pairs(&[("rabbit_stream_fanout", "false")])).is_ok());
    }

    #[test]
    fn default_section() {
        let d = DefaultOptions::from_pairs(&pairs(&[
            ("rpc_response_timeout", "120"),
            ("control_exchange", "openstack"),
            ("host", "ignored"),
        ]))
        .unwrap();
        assert_eq!(d.rpc_response_timeout, 120);
        assert_eq!(d.control_exchange, "openstack");
    }

    #[test]
    fn retry_intervals_follow_kombu() {
        let secs: Vec<u64> = RabbitOptions::default()
            .retry_intervals()
            .take(18)
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(
            secs,
            vec![1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 30, 30, 30]
        );
        let secs: Vec<u64> = RetryIntervals::new(1, 0, 30)
            .take(3)
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(secs, vec![1, 1, 1]);
    }
}
