//! The `slate` command line: run, check a config, or try it all with `--demo`.

use clap::{Parser, Subcommand};
use slate::config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "slate",
    version,
    about = "A transparent caching reverse proxy for slow reporting APIs"
)]
struct Cli {
    /// The config file.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Run on the memory store in front of a built-in slow demo report origin.
    #[arg(long)]
    demo: bool,
    /// Do not watch the config file; reload only on SIGHUP.
    #[arg(long)]
    no_watch: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file: exit 0, or print `file:line:column: message` for each problem.
    CheckConfig { file: PathBuf },
    /// Run only the demo report origin (also the origin of the benchmarks).
    DemoOrigin {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// How long each report takes, e.g. "1500ms".
        #[arg(long, default_value = "1500ms")]
        delay: String,
        /// Pad every body to this many bytes (0: small JSON reports).
        #[arg(long, default_value_t = 0)]
        body_size: usize,
    },
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("slate={level},warn")));
    // Colours only for a terminal: logs sent to a file or a collector stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Completes on SIGTERM or SIGINT.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reloads the config on SIGHUP: validated whole, then swapped in; a bad edit is logged
/// and the running config stays.
fn reload_on_sighup(live: slate::config::reload::Live, path: PathBuf) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            live.reload_logged(&path);
        }
    });
}

fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    slate::server::bind(addr).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

async fn run(config: Config, path: Option<PathBuf>, watch: bool) -> Result<(), String> {
    let listener = bind(config.server.listen, "server.listen")?;
    let admin = match config.server.admin_listen {
        Some(a) => Some(bind(a, "server.admin_listen")?),
        None => None,
    };
    tracing::info!(listen = %config.server.listen, admin = ?config.server.admin_listen, upstream = %config.upstream.base, "slate starting");
    let instance = slate::Instance::start(config, slate::clock::Clock::system())
        .await
        .map_err(|e| e.to_string())?;
    let _watcher = match path {
        Some(p) => {
            let live = instance.shared.live.clone();
            reload_on_sighup(live.clone(), p.clone());
            if !watch {
                None
            } else {
                match slate::config::reload::watch(&p, live) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
                        None
                    }
                }
            }
        }
        None => None,
    };
    instance.serve(listener, admin, terminated()).await;
    tracing::info!("stopped");
    Ok(())
}

const DEMO_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9091"
[upstream]
url = "http://127.0.0.1:9000"
timeout = "60s"
[store]
kind = "memory"
[[rules]]
path = "/analytics/"
ttl = "1h"
stale_while_revalidate = "10m"
stale_if_error = "1d"
tags = ["analytics"]
"#;

async fn demo() -> Result<(), String> {
    let origin = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the demo origin: {e}"))?;
    let origin_addr = origin.local_addr().map_err(|e| e.to_string())?;
    let text = DEMO_CONFIG.replace("127.0.0.1:9000", &origin_addr.to_string());
    let config = Config::parse("<demo>", &text).map_err(|e| e.to_string())?;
    tokio::spawn(slate::demo::origin(
        origin,
        slate::demo::OriginConfig {
            delay: Duration::from_millis(1500),
            body_size: 0,
        },
        std::future::pending(),
    ));
    let p = config.server.listen;
    let a = config
        .server
        .admin_listen
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "slate demo: a slow report origin (1.5 s a report) on {origin_addr}, slate in front of it on {p}.\n\
         Try:\n\
         \x20 curl -i 'http://{p}/analytics/sales?region=eu&year=2026'      # slow: a miss, goes upstream\n\
         \x20 curl -i 'http://{p}/analytics/sales?year=2026&region=eu&utm_source=mail'  # instant: same key, a hit\n\
         \x20 curl -i -X PURGE 'http://{p}/analytics/sales*'                 # purge by prefix\n\
         \x20 curl -i -X PURGE -H 'Cache-Tag: analytics' 'http://{p}/'        # purge by tag\n\
         \x20 curl -s 'http://{a}/metrics' | grep slate_requests_total\n\
         \x20 open http://{a}/status\n\
         Stop with Ctrl-C."
    );
    run(config, None, false).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    slate::server::raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} rules, store {:?})",
                    file.display(),
                    c.rules.len(),
                    c.store.kind
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        Some(Command::DemoOrigin {
            listen,
            delay,
            body_size,
        }) => {
            init_logs(LogFormat::Text, "info");
            let delay = slate::config::parse_duration(&delay).map_err(|e| format!("--delay: {e}"));
            rt.block_on(async {
                let delay = delay?;
                let l = TcpListener::bind(&listen)
                    .await
                    .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
                eprintln!("demo origin on {listen}: {delay:?} a report");
                slate::demo::origin(
                    l,
                    slate::demo::OriginConfig { delay, body_size },
                    terminated(),
                )
                .await;
                Ok(())
            })
        }
        None if cli.demo => {
            init_logs(LogFormat::Text, "info");
            rt.block_on(demo())
        }
        None => match Config::load(&cli.config) {
            Ok(config) => {
                init_logs(config.log.format, &config.log.level);
                rt.block_on(run(config, Some(cli.config.clone()), !cli.no_watch))
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
