//! The REST API (actix-web), shaped like LXD's where it fits. Handlers only
//! translate HTTP into driver operations over an `InstanceSpec`.
//!
//! This file holds the errors, the shared helpers, the instance handlers and the
//! routes; `images`, `networks`, `snapshots` and `resources` hold their own
//! handlers, `operations` and `progress` the background operations.

mod images;
mod networks;
pub mod operations;
mod progress;
mod resources;
mod snapshots;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::driver::{
    Driver, DriverError, InstanceSpec, InstanceView, PowerState, ReconcileReport, VifPlug, VifSpec,
};
use operations::Operations;
use types::*;

/// The API's one error type: every failure leaves as JSON with a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The full message, with the chain of causes.
    fn message(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            source = s.source();
        }
        msg
    }
}

/// HTTP status of each network error.
pub fn network_status(e: &crate::network::NetworkError) -> StatusCode {
    use crate::network::NetworkError as E;
    match e {
        E::Invalid(_) => StatusCode::BAD_REQUEST,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Conflict(_) => StatusCode::CONFLICT,
        E::Store(_) | E::Command { .. } | E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// HTTP status of each driver error.
pub fn driver_status(e: &DriverError) -> StatusCode {
    match e {
        DriverError::NotFound(_) | DriverError::ImageNotFound(_) => StatusCode::NOT_FOUND,
        DriverError::Conflict(_) => StatusCode::CONFLICT,
        DriverError::Invalid(_) => StatusCode::BAD_REQUEST,
        DriverError::Image(crate::image::ImageError::Unpack(_))
        | DriverError::Image(crate::image::ImageError::NotARootfs(_)) => StatusCode::BAD_REQUEST,
        DriverError::RuntimeUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        DriverError::Runtime(_)
        | DriverError::Storage(_)
        | DriverError::Image(_)
        | DriverError::Store(_)
        | DriverError::Device(_)
        | DriverError::Nic(_)
        | DriverError::Vif(_)
        | DriverError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Driver(e) => driver_status(e),
            ApiError::Network(e) => network_status(e),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        HttpResponse::build(status).json(error_body(
            status,
            &crate::text::printable(&self.message(), 4096),
        ))
    }
}

fn error_body(status: StatusCode, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "error",
        "status": "",
        "status_code": 0,
        "error_code": status.as_u16(),
        "error": message,
        "metadata": null,
    })
}

/// The configuration values the handlers use, handed over at construction.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// This host's name.
    pub host: String,
    /// Where corral keeps its state.
    pub state_path: std::path::PathBuf,
    /// Seconds a graceful stop waits before killing (`[DEFAULT] shutdown_timeout`).
    pub shutdown_timeout: u64,
    /// Seconds an exec runs at most unless the request says (`[corral] exec_timeout`).
    pub exec_timeout: u64,
    /// The largest image upload accepted (`[corral] max_image_bytes`).
    pub max_image_bytes: u64,
    /// The network instances launch on when they name none (`[corral]
    /// default_network`; never on a Nova host).
    pub default_network: Option<String>,
}

impl ApiSettings {
    pub fn from_config(cfg: &crate::config::Config) -> ApiSettings {
        ApiSettings {
            host: cfg.host.clone(),
            state_path: cfg.state_path.clone(),
            shutdown_timeout: cfg.shutdown_timeout,
            exec_timeout: cfg.corral.exec_timeout,
            max_image_bytes: cfg.corral.max_image_bytes,
            default_network: if cfg.nova.is_some() {
                None
            } else {
                cfg.corral.default_network.clone()
            },
        }
    }
}

/// Shared state of the handlers.
pub struct AppState {
    pub driver: Arc<dyn Driver>,
    /// The standalone networks instances are plugged into.
    pub networks: Arc<crate::network::Networks>,
    pub settings: ApiSettings,
    pub ops: Operations,
    pub reconcile: ReconcileReport,
}

type Data = web::Data<AppState>;

fn sync<T: serde::Serialize>(status: StatusCode, metadata: T) -> HttpResponse {
    let mut env = Envelope::sync(metadata);
    env.status_code = status.as_u16();
    HttpResponse::build(status).json(env)
}

fn accepted(op: Operation) -> HttpResponse {
    let url = format!("/1.0/operations/{}", op.id);
    HttpResponse::Accepted()
        .insert_header(("Location", url.clone()))
        .json(Envelope {
            kind: "async".into(),
            status: "Operation created".into(),
            status_code: 100,
            operation: Some(url),
            error_code: 0,
            error: String::new(),
            metadata: Some(op),
        })
}

fn status_code_of(status: &str) -> u16 {
    match status {
        "Running" => 103,
        "Stopped" => 102,
        "Frozen" => 110,
        "Starting" => 106,
        "Creating" | "Deleting" => 104,
        _ => 111,
    }
}

fn power_state_name(p: PowerState) -> &'static str {
    match p {
        PowerState::NoState => "nostate",
        PowerState::Running => "running",
        PowerState::Paused => "paused",
        PowerState::Shutdown => "shutdown",
        PowerState::Crashed => "crashed",
        PowerState::Suspended => "suspended",
    }
}

fn to_instance(v: InstanceView, networks: &crate::network::Networks) -> Instance {
    let nics = v
        .spec
        .vifs
        .iter()
        .enumerate()
        .map(|(i, vif)| {
            let network = match &vif.plug {
                VifPlug::Bridge { bridge } => Some(bridge.clone()),
                _ => None,
            };
            InstanceNic {
                name: vif.inside_name.clone().unwrap_or_else(|| format!("eth{i}")),
                ipv4: network
                    .as_deref()
                    .and_then(|n| networks.lease(n, &vif.mac))
                    .map(|a| a.to_string()),
                network,
                mac: vif.mac.clone(),
                mtu: vif.mtu,
            }
        })
        .collect();
    let stats = v.info.stats.clone().unwrap_or_default();
    Instance {
        status: v.info.status.to_string(),
        status_code: status_code_of(v.info.status),
        state: InstanceState {
            status: v.info.status.to_string(),
            status_code: status_code_of(v.info.status),
            power_state: power_state_name(v.info.power_state).into(),
            pid: v.info.pid,
            cpu_usage_ns: stats.cpu_usage_ns,
            memory_usage_bytes: stats.memory_usage_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            processes: stats.pids_current,
            processes_limit: stats.pids_limit,
            oom_kills: stats.oom_kills,
        },
        name: v.name,
        uuid: v.uuid,
        kind: "container".into(),
        created_at: v.created_at,
        image: v.image,
        image_alias: v.image_alias,
        limits: v.spec.limits,
        privileged: v.spec.privileged,
        nesting: v.spec.nesting,
        devices: v.spec.devices,
        pinned_cpus: v.spec.pinned_cpus.map(|c| c.to_string()),
        command: v.spec.command,
        environment: v.spec.environment,
        idmap: v.idmap,
        nics,
    }
}

fn instance_resources(name: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "instances".to_string(),
        vec![format!("/1.0/instances/{name}")],
    )])
}

fn recursion(req: &HttpRequest) -> bool {
    web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("recursion").cloned())
        .map(|r| r != "0")
        .unwrap_or(false)
}

fn query_param(req: &HttpRequest, key: &str) -> Option<String> {
    web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get(key).cloned())
}

async fn server_info(data: Data) -> HttpResponse {
    let backend = data.driver.backend_info();
    let cfg = &data.settings;
    sync(
        StatusCode::OK,
        ServerInfo {
            api_version: "1.0".into(),
            server: "corral".into(),
            server_version: env!("CARGO_PKG_VERSION").into(),
            host: cfg.host.clone(),
            runtime: backend.runtime,
            runtime_version: backend.runtime_version,
            runtime_root: backend.runtime_root.display().to_string(),
            cgroup_mode: backend.cgroup_mode,
            storage: backend.storage,
            idmapped_roots: backend.idmapped_roots,
            root_disk: backend.root_disk,
            state_path: cfg.state_path.display().to_string(),
            reconcile: serde_json::to_value(&data.reconcile).unwrap_or_default(),
        },
    )
}

async fn list_instances(req: HttpRequest, data: Data) -> Result<HttpResponse, ApiError> {
    let list = data.driver.list().await?;
    if recursion(&req) {
        let items: Vec<Instance> = list
            .into_iter()
            .map(|v| to_instance(v, &data.networks))
            .collect();
        Ok(sync(StatusCode::OK, items))
    } else {
        let urls: Vec<String> = list
            .iter()
            .map(|v| format!("/1.0/instances/{}", v.name))
            .collect();
        Ok(sync(StatusCode::OK, urls))
    }
}

async fn create_instance(
    data: Data,
    body: web::Json<InstancesPost>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.source.kind != "image" {
        return Err(ApiError::BadRequest(format!(
            "source type {:?} is not supported (use \"image\")",
            body.source.kind
        )));
    }
    let image = body
        .source
        .alias
        .clone()
        .or(body.source.fingerprint.clone())
        .ok_or_else(|| ApiError::BadRequest("source needs an alias or a fingerprint".into()))?;
    crate::driver::validate_name(&body.name)?;
    let mapped = crate::driver::extra_specs::apply(
        &body.extra_specs,
        body.limits,
        crate::driver::extra_specs::Unknown::Refuse,
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut devices = mapped.devices;
    for (name, text) in &body.devices {
        let dev =
            crate::devices::parse(name, text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if devices.insert(name.clone(), dev).is_some() {
            return Err(ApiError::BadRequest(format!(
                "device {name} is given both in devices and in extra_specs"
            )));
        }
    }
    // Checked here too so that the caller gets a synchronous 404/409.
    data.driver.images().get_image(&image).await?;
    if data.driver.resolve(&body.name).await.is_ok() {
        return Err(DriverError::Conflict(format!("instance {} already exists", body.name)).into());
    }
    let (vifs, holds) = instance_vifs(&data, body.networks.as_deref()).await?;
    let spec = InstanceSpec {
        uuid: uuid::Uuid::new_v4().to_string(),
        name: body.name.clone(),
        image,
        limits: mapped.limits,
        privileged: mapped.privileged.unwrap_or(body.privileged),
        nesting: mapped.nesting.unwrap_or(body.nesting),
        devices,
        pinned_cpus: None,
        command: body.command,
        environment: body.environment,
        hostname: None,
        pci_devices: Vec::new(),
        vifs,
        config_drive: None,
        network_interfaces: None,
    };
    // Security options, dedicated CPUs, devices: refused synchronously.
    data.driver.check(&spec)?;
    let driver = data.driver.clone();
    let start = body.start;
    let op = data.ops.spawn(
        "Creating instance",
        instance_resources(&body.name),
        async move {
            // The networks stay until the instance is in the store.
            let _holds = holds;
            driver
                .spawn(&spec, start, None)
                .await
                .map(|()| Some(serde_json::json!({"uuid": spec.uuid, "name": spec.name})))
                .map_err(|e| ApiError::from(e).message())
        },
    );
    Ok(accepted(op))
}

/// The interfaces of a new instance: one on each network named (`eth0`
/// first), the default network's when none is named, none for `["none"]`;
/// each network is held until the instance exists.
async fn instance_vifs(
    data: &Data,
    names: Option<&[String]>,
) -> Result<(Vec<VifSpec>, Vec<crate::network::Hold>), ApiError> {
    let names: Vec<String> = match names {
        Some(n) if n.iter().any(|x| x == "none") => {
            if n.len() > 1 {
                return Err(ApiError::BadRequest(
                    "network \"none\" cannot be combined with other networks".into(),
                ));
            }
            Vec::new()
        }
        Some(n) => n.to_vec(),
        None => match &data.settings.default_network {
            Some(d) => {
                if data.networks.get(d).await.is_err() {
                    return Err(ApiError::NotFound(format!(
                        "the default network {d} does not exist (see the daemon's log): name a network, or \"none\""
                    )));
                }
                vec![d.clone()]
            }
            None => Vec::new(),
        },
    };
    if names.len() > 16 {
        return Err(ApiError::BadRequest(
            "at most 16 network interfaces per instance".into(),
        ));
    }
    let mut vifs = Vec::new();
    let mut holds = Vec::new();
    for name in names {
        let (net, hold) = data.networks.hold(&name).await?;
        vifs.push(VifSpec {
            id: uuid::Uuid::new_v4().to_string(),
            mac: crate::network::random_mac(),
            mtu: net.mtu,
            inside_name: None,
            plug: VifPlug::Bridge { bridge: net.name },
        });
        holds.push(hold);
    }
    Ok((vifs, holds))
}

async fn get_instance(path: web::Path<String>, data: Data) -> Result<HttpResponse, ApiError> {
    let v = data.driver.get(&path).await?;
    Ok(sync(StatusCode::OK, to_instance(v, &data.networks)))
}

async fn delete_instance(
    path: web::Path<String>,
    req: HttpRequest,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let view = data.driver.get(&name).await?;
    let force = query_param(&req, "force")
        .map(|f| f == "true" || f == "1")
        .unwrap_or(false);
    if view.info.pid.is_some() && !force {
        return Err(DriverError::Conflict(format!(
            "instance {name} is running: stop it first or delete with force"
        ))
        .into());
    }
    let driver = data.driver.clone();
    let uuid = view.uuid.clone();
    let op = data
        .ops
        .spawn("Deleting instance", instance_resources(&name), async move {
            driver
                .destroy(&uuid)
                .await
                .map(|()| None)
                .map_err(|e| ApiError::from(e).message())
        });
    Ok(accepted(op))
}

async fn get_state(path: web::Path<String>, data: Data) -> Result<HttpResponse, ApiError> {
    let v = data.driver.get(&path).await?;
    Ok(sync(StatusCode::OK, to_instance(v, &data.networks).state))
}

async fn put_state(
    path: web::Path<String>,
    data: Data,
    body: web::Json<StatePut>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let body = body.into_inner();
    let uuid = data.driver.resolve(&name).await?;
    let default_timeout = data.settings.shutdown_timeout;
    let timeout = match body.timeout {
        None => Duration::from_secs(default_timeout),
        Some(t) if t < 0 => Duration::from_secs(default_timeout),
        Some(t) => Duration::from_secs(t as u64),
    };
    let force = body.force;
    let info = data.driver.get_info(&uuid).await?;
    let running = matches!(info.power_state, PowerState::Running | PowerState::Paused);
    let action = body.action.clone();
    match action.as_str() {
        "start" if running => {
            return Err(DriverError::Conflict(format!("instance {name} is already running")).into())
        }
        "stop" | "restart" | "freeze" if !running => {
            return Err(DriverError::Conflict(format!("instance {name} is not running")).into())
        }
        "freeze" if info.power_state == PowerState::Paused => {
            return Err(DriverError::Conflict(format!("instance {name} is already frozen")).into())
        }
        "unfreeze" if info.power_state != PowerState::Paused => {
            return Err(DriverError::Conflict(format!("instance {name} is not frozen")).into())
        }
        "start" | "stop" | "restart" | "freeze" | "unfreeze" => {}
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown action {other:?}: use start, stop, restart, freeze or unfreeze"
            )))
        }
    }
    let driver = data.driver.clone();
    let op = data.ops.spawn(
        &format!("Instance {action}"),
        instance_resources(&name),
        async move {
            let r = match action.as_str() {
                "start" => driver.power_on(&uuid).await,
                "stop" => driver.power_off(&uuid, timeout, force).await,
                "restart" => driver.reboot(&uuid, force, timeout).await,
                "freeze" => driver.pause(&uuid).await,
                _ => driver.unpause(&uuid).await,
            };
            r.map(|()| None).map_err(|e| ApiError::from(e).message())
        },
    );
    Ok(accepted(op))
}

async fn console_log(
    path: web::Path<String>,
    req: HttpRequest,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let uuid = data.driver.resolve(&path).await?;
    let lines = match query_param(&req, "lines") {
        None => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::BadRequest(format!("lines must be a number, got {l:?}")))?,
        ),
    };
    let text = data.driver.console_output(&uuid, lines).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

async fn exec(
    path: web::Path<String>,
    data: Data,
    body: web::Json<ExecPost>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.command.is_empty() {
        return Err(ApiError::BadRequest("command must not be empty".into()));
    }
    let uuid = data.driver.resolve(&path).await?;
    let env: Vec<String> = body
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let timeout = Duration::from_secs(body.timeout.unwrap_or(data.settings.exec_timeout));
    let out = data
        .driver
        .exec(&uuid, &body.command, &env, body.cwd.as_deref(), timeout)
        .await?;
    Ok(sync(
        StatusCode::OK,
        ExecResult {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
        },
    ))
}

async fn list_operations(data: Data) -> HttpResponse {
    sync(StatusCode::OK, data.ops.list())
}

async fn get_operation(path: web::Path<String>, data: Data) -> Result<HttpResponse, ApiError> {
    let op = data
        .ops
        .get(&path)
        .ok_or_else(|| ApiError::NotFound(format!("operation {} not found", path.as_str())))?;
    Ok(sync(StatusCode::OK, op))
}

async fn wait_operation(
    path: web::Path<String>,
    req: HttpRequest,
    data: Data,
) -> Result<HttpResponse, ApiError> {
    let timeout = match query_param(&req, "timeout") {
        None => Duration::from_secs(3600),
        Some(t) => match t.parse::<i64>() {
            Ok(t) if t < 0 => Duration::from_secs(3600),
            Ok(t) => Duration::from_secs(t as u64),
            Err(_) => {
                return Err(ApiError::BadRequest(format!(
                    "timeout must be a number, got {t:?}"
                )))
            }
        },
    };
    let op = data
        .ops
        .wait(&path, timeout)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("operation {} not found", path.as_str())))?;
    Ok(sync(StatusCode::OK, op))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let status = StatusCode::NOT_FOUND;
    HttpResponse::build(status).json(error_body(
        status,
        &format!("no such endpoint: {} {}", req.method(), req.path()),
    ))
}

fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let msg = format!("invalid request body: {err}");
    actix_web::error::InternalError::from_response(
        err,
        HttpResponse::BadRequest().json(error_body(StatusCode::BAD_REQUEST, &msg)),
    )
    .into()
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(1 << 20)
            .error_handler(json_error),
    )
    .route("/1.0", web::get().to(server_info))
    .route("/1.0/resources", web::get().to(resources::get))
    .route("/1.0/instances", web::get().to(list_instances))
    .route("/1.0/instances", web::post().to(create_instance))
    .route("/1.0/instances/{name}", web::get().to(get_instance))
    .route("/1.0/instances/{name}", web::delete().to(delete_instance))
    .route("/1.0/instances/{name}", web::put().to(snapshots::restore))
    .route(
        "/1.0/instances/{name}/publish",
        web::post().to(snapshots::publish),
    )
    .route(
        "/1.0/instances/{name}/snapshots",
        web::get().to(snapshots::list),
    )
    .route(
        "/1.0/instances/{name}/snapshots",
        web::post().to(snapshots::create),
    )
    .route(
        "/1.0/instances/{name}/snapshots/{snapshot}",
        web::get().to(snapshots::get),
    )
    .route(
        "/1.0/instances/{name}/snapshots/{snapshot}",
        web::delete().to(snapshots::delete),
    )
    .route("/1.0/instances/{name}/state", web::get().to(get_state))
    .route("/1.0/instances/{name}/state", web::put().to(put_state))
    .route(
        "/1.0/instances/{name}/logs/console",
        web::get().to(console_log),
    )
    .route("/1.0/instances/{name}/exec", web::post().to(exec))
    .route("/1.0/images", web::get().to(images::list_images))
    .route("/1.0/images", web::post().to(images::import_image))
    .route("/1.0/images/{key:.*}", web::get().to(images::get_image))
    .route(
        "/1.0/images/{key:.*}",
        web::delete().to(images::delete_image),
    )
    .route("/1.0/networks", web::get().to(networks::list_networks))
    .route("/1.0/networks", web::post().to(networks::create_network))
    .route("/1.0/networks/{name}", web::get().to(networks::get_network))
    .route(
        "/1.0/networks/{name}",
        web::delete().to(networks::delete_network),
    )
    .route("/1.0/operations", web::get().to(list_operations))
    .route("/1.0/operations/{id}", web::get().to(get_operation))
    .route("/1.0/operations/{id}/wait", web::get().to(wait_operation))
    .default_service(web::to(not_found));
}

/// Binds the API on a unix socket (mode 0660) and returns the server.
pub fn server(
    state: AppState,
    socket: &Path,
    group: Option<&str>,
) -> std::io::Result<actix_web::dev::Server> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another daemon is listening on {}", socket.display()),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    let data = web::Data::new(state);
    let srv = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("corral::api"))
            .configure(routes)
    })
    .workers(2)
    .disable_signals()
    .bind_uds(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other(format!("group {g} does not exist")))?;
        nix::unistd::chown(socket, None, Some(gid.gid)).map_err(std::io::Error::other)?;
    }
    Ok(srv.run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkError;

    #[test]
    fn every_network_error_has_its_status() {
        for (e, status) in [
            (NetworkError::Invalid("bad".into()), 400),
            (NetworkError::NotFound("n".into()), 404),
            (NetworkError::Conflict("in use".into()), 409),
            (
                NetworkError::Command {
                    what: "ip link add".into(),
                    detail: "no".into(),
                },
                500,
            ),
            (
                NetworkError::Io {
                    path: "/x".into(),
                    source: std::io::Error::other("no"),
                },
                500,
            ),
            (
                NetworkError::Store(crate::store::StoreError::IdRangesExhausted(1)),
                500,
            ),
        ] {
            let api = ApiError::from(e);
            assert_eq!(api.status_code().as_u16(), status, "{api}");
            let body = api.error_response();
            assert_eq!(body.status().as_u16(), status);
        }
        assert_eq!(
            ApiError::from(NetworkError::NotFound("web".into())).message(),
            "network web not found"
        );
    }
}
