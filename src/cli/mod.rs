//! The command line: `corral daemon` runs the service; every other verb is a
//! thin client of the daemon's REST API.

pub mod client;
mod snapshot;

pub use snapshot::SnapshotCommand;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::api::types::{
    ExecPost, ExecResult, Image, Instance, InstancesPost, Limits, Network, NetworksPost,
    ServerInfo, Source, StatePut,
};
use crate::strutil::parse_pairs;
use client::Client;

/// Where clients look for the daemon when no socket is given.
pub const DEFAULT_SOCKET: &str = "/run/corral/corral.sock";

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "System containers for OpenStack Nova and on their own"
)]
pub struct Cli {
    /// The daemon's API socket.
    /// (default: /run/corral/corral.sock; for `daemon`, overrides [corral] socket)
    #[arg(long, global = true, env = "CORRAL_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the corral daemon.
    Daemon(DaemonArgs),
    /// Create and start an instance from an image.
    Launch(LaunchArgs),
    /// Create an instance from an image without starting it.
    Init(LaunchArgs),
    /// List instances.
    List,
    /// Show one instance.
    Info { name: String },
    /// Start an instance.
    Start { name: String },
    /// Stop an instance (its init gets the stop signal, then a kill after the timeout).
    Stop(StopArgs),
    /// Stop and start an instance.
    Restart(StopArgs),
    /// Freeze every process of an instance.
    Pause { name: String },
    /// Thaw a paused instance.
    Resume { name: String },
    /// Delete an instance.
    Delete {
        name: String,
        /// Delete even if running.
        #[arg(long, short)]
        force: bool,
    },
    /// Run a command inside an instance; exits with the command's exit code.
    Exec {
        name: String,
        /// Environment for the command (KEY=VALUE).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print an instance's console log.
    ConsoleLog {
        name: String,
        /// Only the last N lines.
        #[arg(long)]
        lines: Option<usize>,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Make an image of an instance as it is now (as `lxc publish`).
    Publish {
        instance: String,
        #[arg(long)]
        alias: Option<String>,
    },
    /// Manage snapshots of instances' roots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Manage standalone networks (bridge, DHCP, NAT).
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Show the daemon's runtime, storage and reconcile report.
    Status,
    /// Nova tools (local; no daemon needed).
    #[command(subcommand)]
    Nova(NovaCommand),
}

#[derive(Debug, Subcommand)]
pub enum NovaCommand {
    /// Decode captured Nova messages (a record with body_raw, a file with a
    /// `messages` list, or a raw AMQP body) and print them as JSON.
    Decode {
        /// The file to read; - for standard input.
        file: PathBuf,
        /// Print tokens and passwords instead of hiding them.
        #[arg(long)]
        show_secrets: bool,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// nova.conf-style config file; repeat for more (later files win).
    #[arg(long = "config-file")]
    pub config_file: Vec<PathBuf>,
    /// Overrides [DEFAULT] state_path.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Image alias or fingerprint.
    pub image: String,
    pub name: String,
    /// Hard cap in CPUs (may be fractional: 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight (cgroup cpu shares).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// Memory limit: 256MiB, 1GiB, 512MB ...
    #[arg(long)]
    pub memory: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Swap on top of --memory (memory+swap = memory + swap; 0: no swap).
    #[arg(long)]
    pub swap: Option<String>,
    /// Size of the root disk (what the instance can write): 1GiB, 512MiB ...
    #[arg(long)]
    pub disk: Option<String>,
    /// Size of an ephemeral disk, mounted at /mnt: 1GiB, 512MiB ...
    #[arg(long)]
    pub ephemeral: Option<String>,
    /// The ephemeral disk's filesystem (ext4 by default).
    #[arg(long, requires = "ephemeral")]
    pub ephemeral_format: Option<String>,
    /// Run without a user namespace (container root is host root).
    #[arg(long)]
    pub privileged: bool,
    /// Let the instance run nested containers (/proc and /sys fully visible).
    #[arg(long)]
    pub nesting: bool,
    /// A Nova flavor extra spec, e.g. quota:cpu_shares=512,
    /// hw:cpu_policy=dedicated, quota:disk_write_bytes_sec=5242880 (repeatable).
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    pub limit: Vec<String>,
    /// A host device: NAME=TYPE,KEY=VALUE,... e.g. fuse=unix-char,path=/dev/fuse
    /// or data=disk,source=/srv/data,path=/mnt/data (repeatable).
    #[arg(long = "device", value_name = "NAME=TYPE,KEY=VALUE,...")]
    pub device: Vec<String>,
    /// Environment for the init (KEY=VALUE).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A network for the next interface (eth0, eth1, ...; repeatable);
    /// `none` for loopback only. Default: the host's default network.
    #[arg(long = "network", value_name = "NAME")]
    pub network: Vec<String>,
    /// Run this instead of the image's init.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub name: String,
    /// Kill at once instead of a graceful stop.
    #[arg(long, short)]
    pub force: bool,
    /// Seconds to wait for a graceful stop.
    #[arg(long)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network: a bridge with the subnet's first address, DHCP and
    /// DNS from dnsmasq, NAT to the host.
    Create {
        name: String,
        /// IPv4 subnet in CIDR form, e.g. 10.149.0.0/24 (default: a free 10.x.y.0/24).
        #[arg(long)]
        subnet: Option<String>,
        /// Do not masquerade the subnet's traffic leaving the host.
        #[arg(long)]
        no_nat: bool,
        #[arg(long)]
        mtu: Option<u32>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List networks.
    List,
    /// Show one network.
    Show { name: String },
    /// Delete a network no instance uses.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image: a root tarball (.tar, .tar.gz, .tar.xz, .tar.zst), squashfs, raw disk or qcow2.
    Import {
        file: PathBuf,
        #[arg(long)]
        alias: Option<String>,
        /// The signal a graceful stop sends to the image's init (default:
        /// SIGRTMIN+3 for systemd images, else [corral] stop_signal).
        #[arg(long)]
        stop_signal: Option<String>,
    },
    /// List images.
    List,
    /// Show one image.
    Info { name: String },
    /// Delete an image.
    Delete { name: String },
}

fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid environment entry {p:?}: use KEY=VALUE"),
        })
        .collect()
}

fn print<T: Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Table => print!("{}", table(value)),
    }
    Ok(())
}

/// Renders rows as an aligned table with a header.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

fn limits_text(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.cpus {
        parts.push(format!("cpus={c}"));
    }
    if let Some(s) = l.cpu_shares {
        parts.push(format!("shares={s}"));
    }
    if let Some(m) = l.memory_bytes {
        parts.push(format!("memory={}", human_bytes(m)));
    }
    if let Some(p) = l.pids {
        parts.push(format!("pids={p}"));
    }
    if let Some(s) = l.swap_bytes {
        parts.push(format!("swap={}", human_bytes(s)));
    }
    if let Some(d) = l.root_disk_bytes {
        parts.push(format!("disk={}", human_bytes(d)));
    }
    if let Some(d) = l.ephemeral_bytes {
        let fs = l.ephemeral_format.as_deref().unwrap_or("ext4");
        parts.push(format!("ephemeral={}({fs})", human_bytes(d)));
    }
    if l.cpu_dedicated {
        parts.push("dedicated".into());
    }
    for (k, v) in [
        ("read_bps", l.disk_read_bytes_sec),
        ("write_bps", l.disk_write_bytes_sec),
        ("read_iops", l.disk_read_iops_sec),
        ("write_iops", l.disk_write_iops_sec),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(",")
}

fn instance_detail(i: &Instance) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Name: {}\nUUID: {}\nStatus: {}\n",
        i.name, i.uuid, i.status
    ));
    s.push_str(&format!(
        "Image: {}{}\nCreated: {}\n",
        i.image_alias
            .as_deref()
            .map(|a| format!("{a} "))
            .unwrap_or_default(),
        &i.image[..i.image.len().min(12)],
        i.created_at
    ));
    s.push_str(&format!("Privileged: {}\n", i.privileged));
    if i.nesting {
        s.push_str("Nesting: true\n");
    }
    if let Some(c) = &i.pinned_cpus {
        s.push_str(&format!("Dedicated CPUs: {c}\n"));
    }
    for (name, d) in &i.devices {
        s.push_str(&format!("Device {name}: {} {}\n", d.kind(), d.describe()));
    }
    if let Some(m) = &i.idmap {
        s.push_str(&format!("Id map: 0 -> {} ({} ids)\n", m.host_base, m.size));
    }
    s.push_str(&format!("Limits: {}\n", limits_text(&i.limits)));
    for n in &i.nics {
        s.push_str(&format!(
            "NIC {}: {} on {}{}\n",
            n.name,
            n.mac,
            n.network.as_deref().unwrap_or("(not a corral network)"),
            n.ipv4
                .as_deref()
                .map(|a| format!(", {a}"))
                .unwrap_or_default()
        ));
    }
    if let Some(pid) = i.state.pid {
        s.push_str(&format!("PID: {pid}\n"));
    }
    if let Some(p) = i.state.processes {
        s.push_str(&format!(
            "Processes: {p}{}\n",
            i.state
                .processes_limit
                .map(|l| format!(" (limit {l})"))
                .unwrap_or_default()
        ));
    }
    if let Some(m) = i.state.memory_usage_bytes {
        s.push_str(&format!(
            "Memory: {}{}\n",
            human_bytes(m),
            i.state
                .memory_limit_bytes
                .map(|l| format!(" (limit {})", human_bytes(l)))
                .unwrap_or_default()
        ));
    }
    if let Some(c) = i.state.cpu_usage_ns {
        s.push_str(&format!("CPU time: {:.2}s\n", c as f64 / 1e9));
    }
    s
}

/// Runs a client verb; returns the process exit code.
pub fn run_client(cli: &Cli) -> anyhow::Result<i32> {
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let f = cli.format;
    match &cli.command {
        Command::Daemon(_) => bail!("the daemon is not a client verb"),
        Command::Nova(NovaCommand::Decode { file, show_secrets }) => {
            return nova_decode(file, *show_secrets, f);
        }
        _ => {}
    }
    let c = Client::new(&socket);
    let enc = |s: &str| percent_path(s);
    match &cli.command {
        Command::Daemon(_) | Command::Nova(_) => {}
        Command::Launch(a) | Command::Init(a) => {
            let start = matches!(cli.command, Command::Launch(_));
            let memory_bytes = a
                .memory
                .as_deref()
                .map(crate::strutil::parse_size)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let swap_bytes = a
                .swap
                .as_deref()
                .map(crate::strutil::parse_size)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let root_disk_bytes = a
                .disk
                .as_deref()
                .map(crate::strutil::parse_size)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let ephemeral_bytes = a
                .ephemeral
                .as_deref()
                .map(crate::strutil::parse_size)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let extra_specs = parse_pairs(&a.limit).map_err(anyhow::Error::msg)?;
            let devices = parse_pairs(&a.device)
                .map_err(|e| anyhow::anyhow!("--device: {e} (use NAME=TYPE,KEY=VALUE,...)"))?;
            let body = InstancesPost {
                name: a.name.clone(),
                source: Source {
                    kind: "image".into(),
                    alias: Some(a.image.clone()),
                    fingerprint: None,
                },
                limits: Limits {
                    cpus: a.cpus,
                    cpu_shares: a.cpu_shares,
                    memory_bytes,
                    pids: a.pids,
                    swap_bytes,
                    root_disk_bytes,
                    ephemeral_bytes,
                    ephemeral_format: a.ephemeral_format.clone(),
                    ..Limits::default()
                },
                privileged: a.privileged,
                nesting: a.nesting,
                extra_specs,
                devices,
                command: (!a.command.is_empty()).then(|| a.command.clone()),
                environment: parse_env(&a.env)?,
                start,
                networks: (!a.network.is_empty()).then(|| a.network.clone()),
            };
            c.run("POST", "/1.0/instances", Some(&json(&body)?))?;
            let inst: Instance = c.get(&format!("/1.0/instances/{}", enc(&a.name)))?;
            print(f, &inst, |i| {
                format!(
                    "{} {} ({}) from {}: {}\n",
                    if start { "Launched" } else { "Created" },
                    i.name,
                    i.uuid,
                    i.image_alias.as_deref().unwrap_or(&i.image),
                    i.status
                )
            })?;
        }
        Command::List => {
            let list: Vec<Instance> = c.get("/1.0/instances?recursion=1")?;
            print(f, &list, |l| {
                table(
                    &["NAME", "STATUS", "IPV4", "IMAGE", "PID", "LIMITS", "UUID"],
                    l.iter()
                        .map(|i| {
                            vec![
                                i.name.clone(),
                                i.status.clone(),
                                nic_addresses(i),
                                i.image_alias.clone().unwrap_or_else(|| {
                                    i.image[..i.image.len().min(12)].to_string()
                                }),
                                i.state.pid.map(|p| p.to_string()).unwrap_or_default(),
                                limits_text(&i.limits),
                                i.uuid.clone(),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
        Command::Info { name } => {
            let inst: Instance = c.get(&format!("/1.0/instances/{}", enc(name)))?;
            print(f, &inst, instance_detail)?;
        }
        Command::Snapshot(cmd) => snapshot::run(&c, f, cmd)?,
        Command::Publish { instance, alias } => snapshot::publish(&c, f, instance, alias)?,
        Command::Start { name } => state(&c, name, "start", false, None)?,
        Command::Stop(a) => state(&c, &a.name, "stop", a.force, a.timeout)?,
        Command::Restart(a) => state(&c, &a.name, "restart", a.force, a.timeout)?,
        Command::Pause { name } => state(&c, name, "freeze", false, None)?,
        Command::Resume { name } => state(&c, name, "unfreeze", false, None)?,
        Command::Delete { name, force } => {
            c.run(
                "DELETE",
                &format!(
                    "/1.0/instances/{}{}",
                    enc(name),
                    if *force { "?force=true" } else { "" }
                ),
                None,
            )?;
        }
        Command::Exec {
            name,
            env,
            cwd,
            command,
        } => {
            let body = ExecPost {
                command: command.clone(),
                environment: parse_env(env)?,
                cwd: cwd.clone(),
                timeout: None,
            };
            let r: ExecResult = c.sync(
                "POST",
                &format!("/1.0/instances/{}/exec", enc(name)),
                Some(&json(&body)?),
            )?;
            if f == Format::Table {
                use std::io::Write;
                std::io::stdout().write_all(r.stdout.as_bytes())?;
                std::io::stderr().write_all(r.stderr.as_bytes())?;
            } else {
                print(f, &r, |_| String::new())?;
            }
            return Ok(r.exit_code);
        }
        Command::ConsoleLog { name, lines } => {
            let q = lines.map(|n| format!("?lines={n}")).unwrap_or_default();
            let text = c.get_text(&format!("/1.0/instances/{}/logs/console{q}", enc(name)))?;
            print!("{text}");
        }
        Command::Image(ic) => match ic {
            ImageCommand::Import {
                file,
                alias,
                stop_signal,
            } => {
                if !file.is_file() {
                    bail!("{} is not a file", file.display());
                }
                let mut headers: Vec<(&str, &str)> = alias
                    .iter()
                    .map(|a| ("X-Corral-Alias", a.as_str()))
                    .collect();
                if let Some(s) = stop_signal {
                    headers.push(("X-Corral-Stop-Signal", s.as_str()));
                }
                let op = c
                    .upload("/1.0/images", file, &headers)
                    .with_context(|| format!("importing {}", file.display()))?;
                let fp = op
                    .metadata
                    .as_ref()
                    .and_then(|m| m.get("fingerprint"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                let img: Image = c.get(&format!("/1.0/images/{fp}"))?;
                print(f, &img, |i| {
                    format!(
                        "Imported {} as {}\n",
                        &i.fingerprint[..i.fingerprint.len().min(12)],
                        i.alias.as_deref().unwrap_or("(no alias)")
                    )
                })?;
            }
            ImageCommand::List => {
                let list: Vec<Image> = c.get("/1.0/images?recursion=1")?;
                print(f, &list, |l| {
                    table(
                        &[
                            "ALIAS",
                            "FINGERPRINT",
                            "SIZE",
                            "DESCRIPTION",
                            "USED BY",
                            "CREATED",
                        ],
                        l.iter()
                            .map(|i| {
                                vec![
                                    i.alias.clone().unwrap_or_default(),
                                    i.fingerprint[..i.fingerprint.len().min(12)].to_string(),
                                    human_bytes(i.size as u64),
                                    i.properties
                                        .get("description")
                                        .and_then(|d| d.as_str())
                                        .unwrap_or("")
                                        .to_string(),
                                    i.used_by.len().to_string(),
                                    i.created_at.clone(),
                                ]
                            })
                            .collect(),
                    )
                })?;
            }
            ImageCommand::Info { name } => {
                let img: Image = c.get(&format!("/1.0/images/{}", enc(name)))?;
                print(f, &img, |i| {
                    format!("{}\n", serde_yaml_ng::to_string(i).unwrap_or_default())
                })?;
            }
            ImageCommand::Delete { name } => {
                let _: serde_json::Value =
                    c.sync("DELETE", &format!("/1.0/images/{}", enc(name)), None)?;
            }
        },
        Command::Network(nc) => network_command(&c, f, nc)?,
        Command::Status => {
            let info: ServerInfo = c.get("/1.0")?;
            print(f, &info, |i| {
                format!("{}\n", serde_yaml_ng::to_string(i).unwrap_or_default())
            })?;
        }
    }
    Ok(0)
}

/// The IPv4 addresses of an instance's interfaces: `10.148.0.23 (eth0)`.
fn nic_addresses(i: &Instance) -> String {
    i.nics
        .iter()
        .filter_map(|n| n.ipv4.as_ref().map(|a| format!("{a} ({})", n.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn network_detail(n: &Network) -> String {
    let mut s = format!(
        "Name: {}\nType: {}\nSubnet: {}\nAddress: {}\nNAT: {}\nMTU: {}\nStatus: {}\n",
        n.name,
        n.kind,
        n.subnet,
        n.ipv4_address,
        n.nat,
        n.mtu
            .map(|m| m.to_string())
            .unwrap_or_else(|| "default".into()),
        n.status
    );
    if !n.description.is_empty() {
        s.push_str(&format!("Description: {}\n", n.description));
    }
    s.push_str(&format!(
        "Bridge: {}\nDHCP/DNS: {}\nNAT table: {}\n",
        if n.state.bridge { "present" } else { "missing" },
        n.state
            .dnsmasq_pid
            .map(|p| format!("dnsmasq pid {p}"))
            .unwrap_or_else(|| "not running".into()),
        if n.state.nft_table {
            "loaded"
        } else {
            "missing"
        },
    ));
    s.push_str(&format!("Created: {}\nUsed by:\n", n.created_at));
    for u in &n.used_by {
        s.push_str(&format!("  {}\n", u.trim_start_matches("/1.0/instances/")));
    }
    s
}

/// `corral network ...`.
fn network_command(c: &Client, f: Format, nc: &NetworkCommand) -> anyhow::Result<()> {
    match nc {
        NetworkCommand::Create {
            name,
            subnet,
            no_nat,
            mtu,
            description,
        } => {
            let body = NetworksPost {
                name: name.clone(),
                subnet: subnet.clone(),
                nat: !no_nat,
                mtu: *mtu,
                description: description.clone(),
            };
            let net: Network = c.sync("POST", "/1.0/networks", Some(&json(&body)?))?;
            print(f, &net, |n| {
                format!("Network {} created on {}\n", n.name, n.ipv4_address)
            })?;
        }
        NetworkCommand::List => {
            let list: Vec<Network> = c.get("/1.0/networks?recursion=1")?;
            print(f, &list, |l| {
                table(
                    &[
                        "NAME",
                        "SUBNET",
                        "ADDRESS",
                        "NAT",
                        "STATUS",
                        "USED BY",
                        "DESCRIPTION",
                    ],
                    l.iter()
                        .map(|n| {
                            vec![
                                n.name.clone(),
                                n.subnet.clone(),
                                n.ipv4_address.clone(),
                                n.nat.to_string(),
                                n.status.clone(),
                                n.used_by.len().to_string(),
                                n.description.clone(),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
        NetworkCommand::Show { name } => {
            let net: Network = c.get(&format!("/1.0/networks/{}", percent_path(name)))?;
            print(f, &net, network_detail)?;
        }
        NetworkCommand::Delete { name } => {
            let _: serde_json::Value = c.sync(
                "DELETE",
                &format!("/1.0/networks/{}", percent_path(name)),
                None,
            )?;
        }
    }
    Ok(())
}

/// `corral nova decode`: every message decoded, or a clear error.
fn nova_decode(file: &std::path::Path, show_secrets: bool, f: Format) -> anyhow::Result<i32> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    // Captures are often kept gzipped.
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(bytes.as_slice()),
            &mut out,
        )
        .with_context(|| format!("cannot gunzip {}", file.display()))?;
        bytes = out;
    }
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
    let values = crate::nova::capture::decode_capture(&text, !show_secrets)
        .with_context(|| format!("cannot decode {}", file.display()))?;
    match f {
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&values)?),
        _ => println!("{}", serde_json::to_string_pretty(&values)?),
    }
    Ok(0)
}

fn state(
    c: &Client,
    name: &str,
    action: &str,
    force: bool,
    timeout: Option<i64>,
) -> anyhow::Result<()> {
    let body = StatePut {
        action: action.to_string(),
        timeout,
        force,
    };
    c.run(
        "PUT",
        &format!("/1.0/instances/{}/state", percent_path(name)),
        Some(&json(&body)?),
    )?;
    Ok(())
}

/// A request body as JSON.
fn json<T: Serialize>(body: &T) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(body)?)
}

/// Escapes a path segment.
fn percent_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else if b == b'/' {
            out.push('/');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_sizes() {
        let t = table(&["A", "BB"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(human_bytes(256 << 20), "256.0MiB");
        assert_eq!(human_bytes(12), "12B");
        assert_eq!(percent_path("a b"), "a%20b");
        assert!(parse_env(&["A=1".into()]).is_ok());
        assert!(parse_env(&["=1".into()]).is_err());
        let yaml = serde_yaml_ng::to_string(
            &serde_json::json!({"name": "a", "limits": {"cpus": 0.5}, "devices": [], "pid": null}),
        )
        .unwrap();
        assert_eq!(
            yaml,
            "name: a\nlimits:\n  cpus: 0.5\ndevices: []\npid: null\n"
        );
        let pairs = parse_pairs(&["quota:cpu_shares = 512".into(), "a=b=c".into()]).unwrap();
        assert_eq!(pairs["quota:cpu_shares"], "512");
        assert_eq!(pairs["a"], "b=c");
        assert_eq!(
            parse_pairs(&["a=1".into(), "a=2".into()]).unwrap_err(),
            "a is given twice"
        );
        assert_eq!(
            parse_pairs(&["x".into()]).unwrap_err(),
            "\"x\" is not KEY=VALUE"
        );
    }
}
