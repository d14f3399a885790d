//! The Nova compute manager: what `nova-compute` does, for corral's containers.
//!
//! Start-up follows nova-compute's order (conductor ping, Service record,
//! ComputeNode and Placement provider, then the RPC servers on `compute` and
//! `compute-alt`), then heartbeats and periodic tasks run until shutdown. Every
//! instance operation goes through the driver seam.

pub mod casts;
pub mod conductor;
pub mod ephemeral;
pub mod events;
pub mod failure;
pub mod glance;
pub mod manager;
pub mod metadata;
pub mod network;
pub mod pci;
pub mod resources;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::config::{Config, NovaConfig};
use crate::driver::{Driver, ImageStore};
use crate::nova::object::{NovaObject, ObjectError};
use crate::nova::RequestContext;
use crate::rpc::{Context, Endpoint, RpcError, RpcOptions, RpcServer, Transport};
use casts::CastRunner;
use conductor::Conductor;
use manager::{ComputeEndpoint, Manager};
use resources::ResourceTracker;

/// nova 34's `SERVICE_VERSION`.
pub const SERVICE_VERSION: i64 = 74;
/// The compute RPC API version served (6.5).
pub const RPC_API_VERSION: &str = "6.5";

/// Errors of the compute service.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("rpc")]
    Rpc(#[from] RpcError),
    #[error("invalid RabbitMQ options")]
    Options(#[from] crate::rpc::OptionsError),
    #[error("nova object")]
    Object(#[from] ObjectError),
    #[error("cannot encode a request")]
    Encode(#[source] serde_json::Error),
    #[error("cannot decode a reply")]
    Decode(#[source] serde_json::Error),
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    #[error("placement")]
    Placement(#[from] crate::placement::error::PlacementError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error("glance: {0}")]
    Glance(String),
    #[error("{0}")]
    Invalid(String),
    /// The host cannot give what the instance asks for (`ComputeResourcesUnavailable`).
    #[error("{0}")]
    ResourcesUnavailable(String),
    /// A rescue the driver could not make (`InstanceNotRescuable`).
    #[error("Instance {uuid} cannot be rescued: {reason}")]
    NotRescuable { uuid: String, reason: String },
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ComputeError {
    /// The message with its causes.
    pub fn full_message(&self) -> String {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            let t = s.to_string();
            if !msg.contains(&t) {
                msg.push_str(": ");
                msg.push_str(&t);
            }
            src = s.source();
        }
        msg
    }
}

/// An admin context of this service (for start-up and periodic work).
pub fn admin_context() -> Context {
    let ctx = RequestContext::admin(
        RequestContext::new_request_id(),
        time::OffsetDateTime::now_utc(),
    );
    match serde_json::to_value(&ctx) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The running compute service.
pub struct ComputeService {
    server: RpcServer,
    transport: Transport,
    casts: Arc<CastRunner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ComputeService {
    /// Starts the compute service the way nova-compute does.
    pub async fn start(
        cfg: Arc<Config>,
        driver: Arc<dyn Driver>,
    ) -> Result<ComputeService, ComputeError> {
        let nova: NovaConfig = cfg
            .nova
            .clone()
            .ok_or_else(|| ComputeError::Invalid("no [DEFAULT] transport_url".into()))?;
        let options = RpcOptions::from_sections(&nova.default_section, &nova.rabbit_section)?;
        let transport = Transport::from_url(&nova.transport_url, options)?;
        let conductor = Conductor::new(
            transport.clone(),
            Duration::from_secs(nova.rpc_response_timeout.max(1)),
        );
        let ctx = admin_context();
        tracing::info!("waiting for nova-conductor");
        conductor.wait_until_ready(&ctx).await?;

        let service = ensure_service(&conductor, &ctx, &cfg.host).await?;
        let tracker =
            ResourceTracker::new(cfg.clone(), nova.clone(), driver.clone(), conductor.clone())?;
        let manager = Arc::new(Manager::new(
            cfg.clone(),
            &nova,
            driver.clone(),
            Arc::new(conductor.clone()),
            tracker.clone(),
        )?);
        tracker
            .update_available_resource(&ctx, &service, true)
            .await?;
        manager.init_host(&ctx).await;

        let casts = Arc::new(CastRunner::new(
            transport.options().default.executor_thread_pool_size,
        ));
        let endpoint: Arc<dyn Endpoint> =
            Arc::new(ComputeEndpoint::new(manager.clone(), casts.clone()));
        let server = RpcServer::builder(transport.clone(), &cfg.host)
            .topic("compute", vec![endpoint.clone()])
            .topic("compute-alt", vec![endpoint])
            .start()
            .await?;
        tracing::info!(host = %cfg.host, "nova compute service consuming compute and compute-alt");

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(heartbeat(
            conductor.clone(),
            service.clone(),
            Duration::from_secs(nova.report_interval),
        )));
        let t = tracker.clone();
        let svc = service.clone();
        let interval = Duration::from_secs(nova.update_resources_interval);
        tasks.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tick.tick().await;
                let ctx = admin_context();
                if let Err(e) = t.update_available_resource(&ctx, &svc, false).await {
                    tracing::warn!(error = %e.full_message(), "update_available_resource failed");
                }
                crate::memtrim::release();
            }
        }));
        if nova.sync_power_state_interval > 0 {
            let m = manager.clone();
            let interval = Duration::from_secs(nova.sync_power_state_interval as u64);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                loop {
                    tick.tick().await;
                    m.sync_power_states(&admin_context()).await;
                    crate::memtrim::release();
                }
            }));
        }
        if nova.shelved_offload_time > 0 && nova.shelved_poll_interval > 0 {
            let m = manager.clone();
            let interval = Duration::from_secs(nova.shelved_poll_interval as u64);
            tasks.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tick.tick().await;
                    m.poll_shelved_instances(&admin_context()).await;
                }
            }));
        }
        if nova.image_cache_interval > 0 && nova.remove_unused_base_images {
            let d = driver.clone();
            let interval = Duration::from_secs(nova.image_cache_interval as u64);
            let min_age = nova.remove_unused_minimum_age;
            tasks.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                loop {
                    tick.tick().await;
                    clean_image_cache(d.images(), min_age).await;
                }
            }));
        }
        Ok(ComputeService {
            server,
            transport,
            casts,
            tasks,
        })
    }

    /// Stops consuming, lets in-flight calls and casts finish (together at most
    /// `graceful_shutdown_timeout`), closes the connections.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let limit = self.transport.options().default.graceful_shutdown();
        let started = tokio::time::Instant::now();
        self.server.stop().await;
        let left = limit.map(|l| l.saturating_sub(started.elapsed()));
        self.casts.shutdown(left).await;
        self.transport.shutdown().await;
    }
}

/// `Service.get_by_host_and_binary`, then create (or bump the version of) the
/// `nova-compute` record at once, so the host is up immediately.
async fn ensure_service(
    conductor: &Conductor,
    ctx: &Context,
    host: &str,
) -> Result<NovaObject, ComputeError> {
    let existing = match conductor
        .class_action(
            ctx,
            "Service",
            "get_by_host_and_binary",
            vec![json!(host), json!("nova-compute")],
            Map::new(),
        )
        .await
    {
        Ok(v) if !v.is_null() => Some(NovaObject::from_primitive(&v)?),
        Ok(_) => None,
        Err(ComputeError::Rpc(RpcError::Remote(r))) if r.exc_type == "ServiceNotFound" => None,
        Err(e) => return Err(e),
    };
    let mut service = match existing {
        Some(mut svc) => {
            svc.reset_changes();
            if svc.get("version").and_then(Value::as_i64) != Some(SERVICE_VERSION) {
                svc.set("version", json!(SERVICE_VERSION));
                conductor
                    .object_action(ctx, &mut svc, "save", vec![], Map::new())
                    .await?;
            }
            svc
        }
        None => {
            let mut svc = NovaObject::new_nova34("Service")?;
            svc.set("version", json!(SERVICE_VERSION));
            svc.set("host", json!(host));
            svc.set("binary", json!("nova-compute"));
            svc.set("topic", json!("compute"));
            svc.set("report_count", json!(0));
            conductor
                .object_action(ctx, &mut svc, "create", vec![], Map::new())
                .await?;
            tracing::info!(host, "created the nova-compute service record");
            svc
        }
    };
    service.reset_changes();
    Ok(service)
}

/// The image cache manager pass: Glance images no instance uses and older than
/// `min_age` seconds leave the cache.
pub async fn clean_image_cache(images: &dyn ImageStore, min_age: u64) {
    let listed = match images.list_images().await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "image cache pass: cannot list images");
            return;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    for img in listed {
        let Some(alias) = img.alias.as_deref().filter(|a| a.starts_with("glance/")) else {
            continue;
        };
        let old = time::OffsetDateTime::parse(
            &img.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|c| (now - c).whole_seconds() >= min_age as i64)
        .unwrap_or(false);
        if !old {
            continue;
        }
        match images.delete_image(alias).await {
            Ok(()) => tracing::info!(alias, "removed an unused image from the cache"),
            Err(crate::driver::DriverError::Conflict(_)) => {}
            Err(e) => tracing::warn!(alias, error = %e, "image cache pass: cannot remove"),
        }
    }
}

/// The servicegroup heartbeat: `report_count += 1; save()` every interval.
///
/// Each report is bounded by the interval itself, not `rpc_response_timeout`: a
/// call lost with the broker connection is abandoned, and sent again as long as
/// the interval lasts, so the next report is never late behind a lost one.
async fn heartbeat(conductor: Conductor, mut service: NovaObject, interval: Duration) {
    let interval = interval.max(Duration::from_secs(1));
    let first = Duration::from_secs(5).min(interval);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tick.tick().await;
        let deadline = tokio::time::Instant::now() + interval;
        match report_state(&conductor, &mut service, deadline).await {
            Ok(()) => {
                if warned {
                    tracing::info!("heartbeat restored");
                }
                warned = false;
            }
            Err(e) => {
                // Keep the count we meant to report; the next save carries it.
                if !warned {
                    tracing::warn!(error = %e.full_message(), "heartbeat failed");
                }
                warned = true;
            }
        }
    }
}

/// One report: `Service.save` with `report_count + 1`, sent again while the broker
/// connection fails under it, until `deadline`.
async fn report_state(
    conductor: &Conductor,
    service: &mut NovaObject,
    deadline: tokio::time::Instant,
) -> Result<(), ComputeError> {
    let count = service
        .get("report_count")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    loop {
        service.reset_changes();
        service.set("report_count", json!(count + 1));
        let ctx = admin_context();
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(100));
        let res = conductor
            .with_timeout(left)
            .object_action(&ctx, service, "save", vec![], Map::new())
            .await;
        match res {
            Ok(_) => return Ok(()),
            Err(ComputeError::Rpc(e))
                if e.is_connection_error()
                    && tokio::time::Instant::now() + Duration::from_millis(200) < deadline =>
            {
                tracing::info!(error = %e, "heartbeat caught by a broker reconnect, sending it again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image cache of fixed records that records what is deleted.
    struct Images {
        records: Vec<crate::store::ImageRecord>,
        deleted: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl ImageStore for Images {
        async fn import_image(
            &self,
            _archive: &std::path::Path,
            _alias: Option<&str>,
            _declared: Option<crate::image::format::Declared>,
        ) -> Result<crate::store::ImageRecord, crate::driver::DriverError> {
            Err(crate::driver::DriverError::Invalid("no imports".into()))
        }
        fn image_upload_path(&self) -> std::path::PathBuf {
            std::path::PathBuf::from("/nonexistent")
        }
        async fn list_images(
            &self,
        ) -> Result<Vec<crate::store::ImageRecord>, crate::driver::DriverError> {
            Ok(self.records.clone())
        }
        async fn get_image(
            &self,
            key: &str,
        ) -> Result<crate::store::ImageRecord, crate::driver::DriverError> {
            Err(crate::driver::DriverError::ImageNotFound(key.into()))
        }
        async fn delete_image(&self, key: &str) -> Result<(), crate::driver::DriverError> {
            self.deleted.lock().unwrap().push(key.to_string());
            if key == "glance/in-use" {
                return Err(crate::driver::DriverError::Conflict("used".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_image_cache_pass_removes_only_old_glance_images() {
        let ago = |secs: i64| {
            (time::OffsetDateTime::now_utc() - time::Duration::seconds(secs))
                .replace_nanosecond(0)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let rec = |alias: Option<&str>, created_at: String| crate::store::ImageRecord {
            fingerprint: format!("fp-{alias:?}"),
            alias: alias.map(str::to_string),
            size: 1,
            created_at,
            properties: Value::Null,
        };
        let images = Images {
            records: vec![
                rec(Some("glance/old"), ago(7200)),
                rec(Some("glance/in-use"), ago(7200)),
                rec(Some("glance/new"), ago(10)),
                rec(Some("local-old"), ago(7200)),
                rec(None, ago(7200)),
                rec(Some("glance/bad-date"), "yesterday".into()),
            ],
            deleted: Default::default(),
        };
        clean_image_cache(&images, 3600).await;
        assert_eq!(
            *images.deleted.lock().unwrap(),
            ["glance/old", "glance/in-use"]
        );
    }

    /// A report whose call is lost is abandoned at the end of its interval, not
    /// after `rpc_response_timeout`: the next heartbeat is never late behind it.
    #[tokio::test]
    async fn a_lost_report_is_abandoned_within_the_report_interval() {
        let url = std::env::var("RABBIT_URL")
            .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".into());
        if std::net::TcpStream::connect("127.0.0.1:5672").is_err() && url.contains("127.0.0.1") {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no RabbitMQ in CI"
            );
            eprintln!("skipping: no RabbitMQ at {url}");
            return;
        }
        // an exchange of its own, with no queue bound: the conductor is away, as
        // while it reconnects after a broker restart, and no real one sees this
        let exchange = format!("heartbeat-{}", uuid::Uuid::new_v4().simple());
        let mut options = RpcOptions::default();
        options.default.control_exchange = exchange.clone();
        let transport = Transport::from_url(&url, options).unwrap();
        // rpc_response_timeout 60 s, as by default
        let conductor = Conductor::new(transport.clone(), Duration::from_secs(60));
        let mut service = NovaObject::new_nova34("Service").unwrap();
        service.set("report_count", json!(7));
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(2);
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            report_state(&conductor, &mut service, deadline),
        )
        .await
        .expect("the report waited past its interval");
        assert!(r.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // the count meant for the lost report is carried by the next one
        assert_eq!(service.get("report_count"), Some(&json!(8)));
        transport.shutdown().await;
        if let Ok(conn) = lapin::Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            lapin::ConnectionProperties::default(),
        )
        .await
        {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await;
            }
            let _ = conn.close(200, "OK".into()).await;
        }
    }
}
