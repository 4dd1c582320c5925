//! `ipfs-media-proxy --config PATH`: command line -> config -> logging -> serve until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Parser, ValueEnum};
use ipfs_media_proxy::app::App;
use ipfs_media_proxy::metrics::{Outcome, METRICS};
use ipfs_media_proxy::{Config, Server};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Changes the log filter of the running process (a SIGHUP reload).
type LogLevel = reload::Handle<EnvFilter, Registry>;

#[derive(Parser)]
#[command(
    version,
    about = "Serves MSC2706 ipfs: media in front of a Matrix homeserver"
)]
struct Cli {
    /// The TOML configuration file (every key documented in config/ipfs-media-proxy.toml).
    #[arg(short, long, default_value = "config/ipfs-media-proxy.toml")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ipfs-media-proxy: {}: {error}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        // The denylists too: a reload would refuse a broken one, so say so before it.
        if let Err(error) = ipfs_media_proxy::denylist::Denylists::load(
            &config.denylist.paths,
            config.denylist.watch_interval,
        ) {
            eprintln!("ipfs-media-proxy: denylist: {error}");
            return ExitCode::from(2);
        }
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let log_level = init_logging(&config, cli.log_format);
    // The control runtime: accepting, shared gateway fetches, probes, signals, the admin
    // listener. Client connections are served by the worker threads (see `server`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ipfs-media-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.config, config, log_level))
}

async fn run(path: PathBuf, config: Config, log_level: LogLevel) -> ExitCode {
    let server = match Server::bind(&config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addrs = ?server.local_addrs(),
        admin = ?server.admin_addr(),
        config = %config.summary(),
        "listening"
    );
    spawn_reloads(path, server.app(), log_level);
    server.serve(shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn init_logging(config: &Config, format: LogFormat) -> LogLevel {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    handle
}

/// SIGHUP: read the configuration file again and apply what can change while running.
fn spawn_reloads(path: PathBuf, app: Arc<App>, log_level: LogLevel) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP: reloading is off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let outcome = match reload(&path, &app, &log_level) {
                Ok(()) => "ok",
                Err(error) => {
                    tracing::error!(
                        config = %path.display(),
                        %error,
                        "reload failed: the running configuration stays in force"
                    );
                    "error"
                }
            };
            METRICS
                .config_reloads
                .get_or_create(&Outcome { outcome })
                .inc();
        }
    });
    #[cfg(not(unix))]
    let _ = (path, app, log_level);
}

fn reload(path: &std::path::Path, app: &App, log_level: &LogLevel) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let changes = app.reload(&config).map_err(|e| e.to_string())?;
    if changes.applied.contains(&"log.level") {
        if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
            tracing::warn!("log.level changed but RUST_LOG is set and wins: not applied");
        } else if let Err(error) = log_level.reload(EnvFilter::new(&config.log.level)) {
            tracing::warn!(%error, "cannot change the log level");
        }
    }
    if !changes.need_restart.is_empty() {
        tracing::warn!(
            keys = ?changes.need_restart,
            "these settings changed in the file but take effect only after a restart"
        );
    }
    tracing::info!(
        applied = ?changes.applied,
        file = %config.summary(),
        "configuration reloaded"
    );
    Ok(())
}

/// SIGTERM (systemd, containers) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
