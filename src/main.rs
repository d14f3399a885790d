//! corral's binary: parse the command line, run the daemon or a client verb.

use clap::Parser;

use corral::cli::{Cli, Command};
use corral::config::{Config, Overrides};

fn main() {
    let cli = Cli::parse();
    std::process::exit(match &cli.command {
        Command::Daemon(args) => daemon(args, &cli),
        _ => client(&cli),
    });
}

fn daemon(args: &corral::cli::DaemonArgs, cli: &Cli) -> i32 {
    let overrides = Overrides {
        state_dir: args.state_dir.clone(),
        socket: cli.socket.clone(),
    };
    let cfg = match Config::load(&args.config_file, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corral: configuration error: {e}");
            return 2;
        }
    };
    let default_filter = if cfg.debug {
        "debug,actix_server=warn"
    } else {
        "info,actix_server=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, corral::daemon::run(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "corral: {}",
                anyhow::Error::from(e)
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": ")
            );
            1
        }
    }
}

/// One exit-code mapping for the client verbs: the command's own code for
/// exec, 1 for any error.
fn client(cli: &Cli) -> i32 {
    // A client verb piped into `head` ends quietly, as shell tools do.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match corral::cli::run_client(cli) {
        Ok(code) => code,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut msg = String::new();
            for part in chain {
                if !msg.contains(&part) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&part);
                }
            }
            eprintln!("Error: {msg}");
            1
        }
    }
}
