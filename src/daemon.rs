//! `corral daemon`: wires config, runtime, storage, store and driver, then
//! serves the API until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, operations::Operations, AppState};
use crate::config::Config;
use crate::driver::ContainerDriver;
use crate::runtime::{cgroups, Runtime};
use crate::storage::Storage;
use crate::store::Store;

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    #[error("cannot serve the API on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    CrashPoint(String),
    #[error("the API server failed")]
    Serve(#[source] std::io::Error),
    #[error("another corral daemon{holder} uses the state path {state}: stop it, or give this daemon its own state_path (--state-dir); the lock is {lock}")]
    Locked {
        state: PathBuf,
        lock: PathBuf,
        /// " (pid N)" when the lock file names it.
        holder: String,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock file that keeps a state path to one daemon.
pub const LOCK_FILE: &str = "corral.lock";

/// Takes the state path's lock for this daemon's life (released when the
/// returned file is dropped or the process ends), and writes our pid in it.
fn lock_state(state: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, DaemonError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.join(LOCK_FILE);
    let fail = |source: std::io::Error| DaemonError::Lock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            lock.set_len(0).map_err(fail)?;
            (&*lock)
                .write_all(format!("{}\n", std::process::id()).as_bytes())
                .map_err(fail)?;
            Ok(lock)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            Err(DaemonError::Locked {
                state: state.to_path_buf(),
                lock: path.clone(),
                holder: if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                    format!(" (pid {pid})")
                } else {
                    String::new()
                },
            })
        }
        Err((_, e)) => Err(fail(std::io::Error::from(e))),
    }
}

/// Runs the daemon until a shutdown signal.
pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    // A test facility: read once, before anything is made.
    if let Some(point) = crate::crashpoint::arm_from_env().map_err(DaemonError::CrashPoint)? {
        tracing::warn!(
            point,
            "crash point armed: the daemon kills itself there (tests only)"
        );
    }
    if cfg.nova.is_some() {
        // the HTTP clients of Placement, Neutron and Glance share it
        crate::tls::warm();
    }
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.state_path).map_err(|source| DaemonError::Dir {
        path: cfg.state_path.clone(),
        source,
    })?;
    // One daemon per state path, for as long as this one runs.
    let _state_lock = lock_state(&cfg.state_path)?;
    let cgroup_root = PathBuf::from(cgroups::DEFAULT_ROOT);
    let runtime = Runtime::select(
        cfg.corral.oci_runtime,
        &cfg.corral.runtime_root,
        &cgroup_root,
    )?;
    std::fs::create_dir_all(&cfg.corral.runtime_root).map_err(|source| DaemonError::Dir {
        path: cfg.corral.runtime_root.clone(),
        source,
    })?;
    let storage = Storage::select(
        cfg.corral.storage,
        cfg.corral.idmapped_roots,
        &cfg.state_path,
        &cfg.state_path.join(".idmap-probe"),
    )?
    .with_root_disk(cfg.corral.root_disk_limit)?;
    let store = Store::open(&cfg.store_path()).await?;
    let networks = Arc::new(crate::network::Networks::new(
        store.clone(),
        &cfg.state_path,
    ));
    tracing::info!(
        runtime = runtime.kind.name(),
        version = %runtime.version,
        cgroups = ?runtime.cgroup_mode,
        hybrid = runtime.cgroup_hybrid,
        storage = ?storage.kind,
        idmapped_roots = storage.idmapped,
        root_disk = storage.root_disk(),
        state_path = %cfg.state_path.display(),
        runtime_root = %cfg.corral.runtime_root.display(),
        cgroup_parent = %cfg.corral.cgroup_parent,
        "corral starting"
    );
    let driver = Arc::new(ContainerDriver::new(
        cfg.clone(),
        runtime,
        storage,
        store,
        cgroup_root,
    )?);
    // The bridges first: reconciliation may plug interfaces into them.
    restore_networks(&cfg, &networks).await;
    let report = driver.reconcile().await?;
    tracing::info!(
        running = report.running,
        stale = ?report.stale,
        rolled_back = ?report.rolled_back,
        finished_deletes = ?report.finished_deletes,
        orphans = ?report.orphans,
        "reconciled store with runtime"
    );
    let state = AppState {
        networks,
        driver: driver.clone(),
        settings: api::ApiSettings::from_config(&cfg),
        ops: Operations::default(),
        reconcile: report,
    };
    let server = api::server(
        state,
        &cfg.corral.socket,
        cfg.corral.socket_group.as_deref(),
    )
    .map_err(|source| DaemonError::Listen {
        path: cfg.corral.socket.clone(),
        source,
    })?;
    let handle = server.handle();
    tracing::info!(socket = %cfg.corral.socket.display(), "API listening");

    let rotate_driver = driver.clone();
    let interval = Duration::from_secs(cfg.corral.console_log_check_interval.max(1));
    let rotator = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if let Err(e) = rotate_driver.rotate_console_logs().await {
                tracing::warn!(error = %e, "console log rotation failed");
            }
        }
    });

    // The Nova compute service, when this host serves Nova.
    let compute = if cfg.nova.is_some() {
        let (c, d) = (cfg.clone(), driver.clone());
        Some(tokio::spawn(async move {
            match crate::compute::ComputeService::start(c, d).await {
                Ok(svc) => Some(svc),
                Err(e) => {
                    tracing::error!(error = %e.full_message(), "the nova compute service failed to start");
                    None
                }
            }
        }))
    } else {
        None
    };

    let socket = cfg.corral.socket.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal: finishing requests; containers keep running");
        handle.stop(true).await;
    });
    let result = server.await.map_err(DaemonError::Serve);
    rotator.abort();
    if let Some(handle) = compute {
        if handle.is_finished() {
            if let Ok(Some(svc)) = handle.await {
                svc.stop().await;
            }
        } else {
            handle.abort();
        }
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("corral stopped");
    result
}

/// Re-creates the stored networks on the host, then the default network of
/// a standalone host. A network that fails is logged and left: instances on
/// other networks (or none) still start.
async fn restore_networks(cfg: &Config, networks: &crate::network::Networks) {
    match networks.restore().await {
        Ok(failed) => {
            for (name, e) in failed {
                tracing::error!(network = %name, error = %e.full_message(), "cannot restore network");
            }
        }
        Err(e) => {
            tracing::error!(error = %e.full_message(), "cannot read the stored networks")
        }
    }
    if cfg.nova.is_some() {
        return;
    }
    if let Some(name) = &cfg.corral.default_network {
        match networks
            .ensure_default(name, cfg.corral.default_network_subnet)
            .await
        {
            Ok(net) => {
                tracing::info!(network = %net.name, subnet = %net.subnet, "default network ready")
            }
            Err(e) => tracing::error!(
                network = %name,
                error = %e.full_message(),
                "cannot make the default network ([corral] default_network, default_network_subnet); instances launch without a network until it exists"
            ),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
