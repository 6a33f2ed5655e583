//! The `slate` command line: run, check a config, or try it all with `--demo`; purge and
//! inspect a running instance through its admin listener (`admin_cli`).

mod admin_cli;

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
    about = "A transparent caching reverse proxy for slow reporting APIs",
    after_help = AFTER_HELP
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

/// Examples, one a subcommand, and the exit codes scripts rely on (`admin_cli`).
const AFTER_HELP: &str = "\
Examples:
  slate --config /etc/slate/config.toml             run the proxy
  slate --demo                                      try it on a built-in slow origin
  slate check-config config.toml                    validate a config file
  slate demo-origin --listen 127.0.0.1:9000         run only the slow demo origin
  slate purge '/analytics/sales?region=eu'          purge one URL
  slate purge --prefix /analytics/sales             purge every path under a prefix
  slate purge --tag sales --soft                    mark every entry tagged sales stale
  slate inspect '/analytics/sales?region=eu'        show what is cached for a URL
  SLATE_TOKEN=... slate purge --admin http://10.0.0.5:9091 --json --tag sales

Exit codes of purge and inspect:
  0   done
  1   refused (403), not found (404) or rejected (400) by slate
  2   the admin listener cannot be reached, or did not answer within --timeout
  3   slate answered but failed (5xx: e.g. its store did not take the purge), or what
      answered is not slate
  64  usage error (any subcommand)";

#[derive(Subcommand)]
enum Command {
    /// Validate a config file: exit 0, or print `file:line:column: message` for each problem.
    CheckConfig { file: PathBuf },
    /// Purge one URL, a path prefix or tags on a running instance (its admin listener).
    #[command(
        after_help = "Examples:\n  slate purge '/analytics/sales?region=eu'\n  slate purge '/analytics/*'\n  slate purge --prefix /analytics/sales --soft\n  slate purge --tag sales --tag inventory\n  SLATE_TOKEN=... slate purge --admin http://10.0.0.5:9091 --json --tag sales"
    )]
    Purge(admin_cli::PurgeArgs),
    /// Show what a running instance has cached for a URL (key, status, age, TTL, tags...).
    #[command(
        after_help = "Examples:\n  slate inspect '/analytics/sales?region=eu'\n  slate inspect -H 'Accept: text/csv' /analytics/export\n  slate inspect --json /analytics/sales | jq .ttl_s"
    )]
    Inspect(admin_cli::InspectArgs),
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
    // The spans of request traces are for the OTLP exporter, never for the logs: with
    // them off here, a request pays nothing for them when tracing is off.
    let filter = match format!("{}=off", slate::TRACE_TARGET).parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
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

/// The signals slate answers, registered before anything slow happens (binding, connecting
/// the store, loading the purge log). SIGHUP's default action is to end the process, so
/// until a handler is registered an operator's reload would kill slate; registered first,
/// a SIGHUP that arrives during start-up is held and acted on once the instance is up, and
/// a SIGTERM or SIGINT during start-up ends it cleanly instead of waiting for the store.
struct Signals {
    #[cfg(unix)]
    term: Option<Signal>,
    #[cfg(unix)]
    int: Option<Signal>,
    #[cfg(unix)]
    hup: Option<Signal>,
}

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind};

/// Registers a handler for `kind` (needs the runtime entered); `None`, said on stderr, when
/// the OS refuses.
#[cfg(unix)]
fn register(kind: SignalKind, name: &str) -> Option<Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("slate: cannot handle {name}: {e}");
            None
        }
    }
}

/// Completes on the first delivery of `s`; never, if it could not be registered.
#[cfg(unix)]
async fn next(s: Option<Signal>) {
    match s {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP; needs the runtime entered.
    fn install() -> Signals {
        #[cfg(unix)]
        return Signals {
            term: register(SignalKind::terminate(), "SIGTERM"),
            int: register(SignalKind::interrupt(), "SIGINT"),
            hup: register(SignalKind::hangup(), "SIGHUP"),
        };
        #[cfg(not(unix))]
        Signals {}
    }

    /// Splits off the future that completes on SIGTERM or SIGINT.
    fn stop(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        #[cfg(unix)]
        let (term, int) = (self.term.take(), self.int.take());
        async move {
            #[cfg(unix)]
            tokio::select! {
                _ = next(term) => {}
                _ = next(int) => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Runs `on_hup` for every SIGHUP from now on, including one held since start-up.
    fn on_hangup(self, mut on_hup: impl FnMut() + Send + 'static) {
        #[cfg(unix)]
        if let Some(mut hup) = self.hup {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    on_hup();
                }
            });
        }
        #[cfg(not(unix))]
        let _ = &mut on_hup;
    }
}

/// Completes on SIGTERM or SIGINT; for the demo origin, which leaves SIGHUP alone.
async fn terminated() {
    #[cfg(unix)]
    tokio::select! {
        _ = next(register(SignalKind::terminate(), "SIGTERM")) => {}
        _ = next(register(SignalKind::interrupt(), "SIGINT")) => {}
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// A state change for systemd's service manager (`Type=notify`, deploy/slate.service).
enum Notify<'a> {
    /// Listening and connected to the store; with a line for `systemctl status`.
    Ready(&'a str),
    /// Draining after SIGTERM/SIGINT.
    Stopping,
}

/// Tells systemd; a no-op unless it started slate (no `NOTIFY_SOCKET`). A failure is logged,
/// not fatal: systemd then times the start out, which tells the operator more than slate
/// exiting would.
fn notify_systemd(n: Notify) {
    #[cfg(unix)]
    {
        use sd_notify::NotifyState;
        let states = match n {
            Notify::Ready(status) => vec![NotifyState::Ready, NotifyState::Status(status)],
            Notify::Stopping => vec![NotifyState::Stopping],
        };
        if let Err(e) = sd_notify::notify(&states) {
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
    #[cfg(not(unix))]
    let _ = n;
}

fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    slate::server::bind(addr).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// Runs slate until SIGTERM/SIGINT. With a config `path`, SIGHUP (and, with `watch`, a
/// change to the file) reloads it; without one (`--demo`), SIGHUP is logged and ignored.
async fn run(
    config: Config,
    path: Option<PathBuf>,
    watch: bool,
    mut signals: Signals,
) -> Result<(), String> {
    let mut stop = Box::pin(signals.stop());
    let reload = match path {
        Some(p) => Some((p, signals)),
        None => {
            signals.on_hangup(|| tracing::info!("SIGHUP ignored: --demo has no config file"));
            None
        }
    };
    let listener = bind(config.server.listen, "server.listen")?;
    let admin = match config.server.admin_listen {
        Some(a) => Some(bind(a, "server.admin_listen")?),
        None => None,
    };
    let listen = config.server.listen;
    tracing::info!(listen = %config.server.listen, admin = ?config.server.admin_listen, upstream = %config.upstream.base, "slate starting");
    let start = slate::Instance::start(config, slate::clock::Clock::system());
    let instance = tokio::select! {
        r = start => r.map_err(|e| e.to_string())?,
        _ = &mut stop => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let _watcher = match reload {
        Some((p, signals)) => {
            let live = instance.shared.live.clone();
            signals.on_hangup({
                let (live, p) = (live.clone(), p.clone());
                move || {
                    tracing::info!("SIGHUP: reloading the config");
                    live.reload_logged(&p);
                }
            });
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
    // Ready only now: both listeners are bound and the store is connected, so a unit
    // ordered after slate.service finds it answering.
    let status = format!("serving on {listen}");
    notify_systemd(Notify::Ready(&status));
    let stop = async move {
        stop.await;
        notify_systemd(Notify::Stopping);
    };
    instance.serve(listener, admin, stop).await;
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

async fn demo(signals: Signals) -> Result<(), String> {
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
    run(config, None, false, signals).await
}

/// Registers the signals first thing, inside `rt` (tokio's signal driver needs it).
fn installed(rt: &tokio::runtime::Runtime) -> Signals {
    let _in = rt.enter();
    Signals::install()
}

/// See Cargo.toml: RSS that follows `memory_limit`, and cheaper allocation of bodies.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and --version are no errors; a usage error exits 64, never clap's 2,
            // which `slate purge` and `slate inspect` give to an unreachable admin listener.
            return match e.use_stderr() {
                true => ExitCode::from(admin_cli::USAGE),
                false => ExitCode::SUCCESS,
            };
        }
    };
    slate::server::no_huge_pages();
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
        Some(Command::Purge(a)) => return rt.block_on(admin_cli::purge(a)),
        Some(Command::Inspect(a)) => return rt.block_on(admin_cli::inspect(a)),
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
            let signals = installed(&rt);
            init_logs(LogFormat::Text, "info");
            rt.block_on(demo(signals))
        }
        None => {
            let signals = installed(&rt);
            match Config::load(&cli.config) {
                Ok(config) => {
                    init_logs(config.log.format, &config.log.level);
                    let path = Some(cli.config.clone());
                    rt.block_on(run(config, path, !cli.no_watch, signals))
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
