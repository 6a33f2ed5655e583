//! slate: a transparent caching reverse proxy for slow reporting APIs.
//!
//! Module map, from the listeners down (each uses only those below it):
//! - `server`: accept loops, connection limits, header timeouts, graceful shutdown.
//! - `proxy`: the request path, a file a step: route and key, lookup and classify, answer
//!   from the cache, the cached path, fill, fill across instances, pass-through.
//! - `purge_api`: the HTTP face of purging (PURGE, `POST /purge`), for both listeners.
//! - `admin`: the admin listener (`/metrics`, `/healthz`, `/entry`, `POST /purge`);
//!   `status`: the HTML status page.
//! - `instance`: one instance's shared state, built once at start.
//! - `queue`: the fill queue (at most `upstream.max_fills` fills at once, over every
//!   instance); `ahead`: entries to refresh before they expire.
//! - `purge`: purge records applied at lookup time (exact, prefix, tag; hard or soft).
//! - `coalesce`: single-flight on one instance: one fill per key, as typed permits.
//! - `store`: where entries live, by concern: `Storage` (memory, Redis, the in-process
//!   tier; memory and the tier keep what is costly to miss: `evict`), `PurgeLog`, and
//!   `Coordination` between instances sharing a store (leases, queue slots, events).
//! - `entry`: the stored entry and its versioned binary format; `coding`: content codings
//!   (bodies stored compressed once, negotiated per client).
//! - `error`: errors slate answers itself, mapped to HTTP in one place.
//! - `key`: URL normalization, blake3 cache keys, and every other name in a store.
//! - `canon`: request bodies made canonical (JSON, GraphQL) and time windows rounded, for
//!   keys.
//! - `policy`: RFC 9111 freshness and storability; rules fill in what the origin left out.
//! - `interim`: 1xx responses from the origin written to an HTTP/1.1 client before the
//!   final one (hyper's server writes none itself).
//! - `upstream`: the pooled client to the reporting service and header hygiene.
//! - `phase`: the named outcome of a request and its reasons, feeding `Cache-Status` and
//!   `metrics`.
//! - `config`: `config.toml` → validated [`config::Config`], live reload.
//! - `demo`: the built-in slow report origin of `slate --demo`.
//! - `top`: the reports that cost the back end most over the last hour (Space-Saving
//!   summaries in bounded memory), for `GET /top` and `/status`.
//! - `otel`: request traces over OTLP/HTTP (`[tracing]`), one span a step.
//! - `clock`, `body`: the clock tests advance, the one body type slate sends.
//!
//! The binary (`main.rs`) adds `admin_cli`: `slate purge` and `slate inspect`, a client of
//! a running instance's admin listener.
//!
//! Tests and embedders start an instance in-process: build it with [`Instance::start`] and
//! serve it with [`Instance::serve`] on listeners bound to port 0. Public are only the
//! modules that the binary, the tests and the benchmarks use.

mod admin;
mod ahead;
pub mod body;
pub mod canon;
pub mod clock;
mod coalesce;
pub mod coding;
pub mod config;
pub mod demo;
pub mod entry;
mod error;
mod instance;
mod interim;
pub mod key;
mod metrics;
mod otel;
mod phase;
mod policy;
mod proxy;
mod purge;
mod purge_api;
pub mod queue;
pub mod server;
mod status;
mod store;
pub mod top;
mod upstream;

pub use error::error_chain;
pub use instance::{Instance, Shared, StartError};
/// The target of the spans of request traces, which the binary's log filter turns off.
pub use otel::TARGET as TRACE_TARGET;
/// The eviction policy of the in-process stores, public for `examples/eviction_sim.rs` and
/// the micro-benchmarks.
pub use store::evict;

use crate::clock::Clock;
use crate::config::Config;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

impl Instance {
    /// Serves the proxy (and admin) listener until `shutdown` completes, then drains:
    /// stops accepting, lets in-flight requests and then fills finish, all within one
    /// `server.shutdown_timeout` from the moment `shutdown` completes, and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        let cfg = self.shared.live.get();
        let (stop_tx, stop_rx) = watch::channel(None);
        let poller = tokio::spawn(self.shared.purges.clone().poll(stop_rx.clone()));
        // Whatever may fill runs under the instance's tracing, when it has it.
        let otel = self.shared.otel.as_ref();
        let warmer = tokio::spawn(otel::under(
            otel,
            warm_loop(self.shared.clone(), stop_rx.clone()),
        ));
        let sampler = tokio::spawn(sample_loop(self.shared.clone()));
        let ahead = tokio::spawn(otel::under(otel, ahead_loop(self.shared.clone())));
        let sh = self.shared.clone();
        let proxy = tokio::spawn({
            let cfg = cfg.server.clone();
            let rx = stop_rx.clone();
            async move {
                server::serve(
                    listener,
                    &cfg,
                    move |req, peer| {
                        let otel = sh.otel.as_ref();
                        otel::under(otel, proxy::handle(sh.clone(), req, peer))
                    },
                    rx,
                )
                .await
            }
        });
        let admin = admin.map(|l| {
            let sh = self.shared.clone();
            let cfg = cfg.server.clone();
            let rx = stop_rx.clone();
            tokio::spawn(async move {
                server::serve(
                    l,
                    &cfg,
                    move |req, peer| admin::handle(sh.clone(), req, peer),
                    rx,
                )
                .await
            })
        });
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests and fills");
        // One deadline for the listeners and the fills alike (see `server::Stop`).
        let deadline = tokio::time::Instant::now() + cfg.server.shutdown_timeout;
        let _ = stop_tx.send(Some(deadline));
        let _ = proxy.await;
        if let Some(a) = admin {
            let _ = a.await;
        }
        self.shared.tasks.close();
        if tokio::time::timeout_at(deadline, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("fills still running after the shutdown timeout; abandoning them");
        }
        let _ = poller.await;
        warmer.abort();
        sampler.abort();
        ahead.abort();
        if self.shared.otel.is_some() {
            let sh = self.shared.clone();
            let flushed = tokio::task::spawn_blocking(move || {
                if let Some(t) = &sh.otel {
                    t.shutdown();
                }
            });
            let _ = flushed.await;
        }
    }
}

/// Samples the request counters every 5 s for the status page's chart.
async fn sample_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        shared.metrics.sample(shared.clock.now_ms() / 1000);
    }
}

/// Starts the refreshes that are due (see `ahead`), every second.
async fn ahead_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    // Entries nobody asked for again are forgotten a day after they expired.
    const FORGET_MS: u64 = 24 * 3600 * 1000;
    loop {
        tick.tick().await;
        for (_, ask) in shared.ahead.due(shared.clock.now_ms(), FORGET_MS) {
            proxy::refresh_ahead(&shared, ask).await;
        }
    }
}

const WARM_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Fetches `[warm] urls` at start and every `every`, through the normal fill path.
async fn warm_loop(shared: Arc<Shared>, mut stop: server::Stop) {
    loop {
        let cfg = shared.live.get();
        let mut failed = false;
        let plain = cfg.warm.urls.iter().map(|u| (u, None));
        let with_body = cfg
            .warm
            .requests
            .iter()
            .map(|r| (&r.url, Some((&r.method, &r.body))));
        for (url, body) in plain.chain(with_body) {
            match proxy::warm(&shared, url, body).await {
                Ok(s) => tracing::debug!(url, status = s.as_u16(), "warmed"),
                Err(e) => {
                    failed = true;
                    tracing::warn!(url, error = %e, "warming failed; will retry");
                }
            }
        }
        // A failed warm fetch is retried soon, not at the next full round. Never less
        // than a second: validation refuses a shorter `every`, and a config built in code
        // must not make this loop spin either.
        let wait = if failed {
            cfg.warm.every.min(WARM_RETRY)
        } else {
            cfg.warm.every
        };
        let wait = wait.max(config::MIN_WARM_EVERY);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = server::stopped(&mut stop) => return,
        }
    }
}

/// Runs slate on `listener` (and `admin`) with `config` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let instance = Instance::start(config, Clock::system()).await?;
    instance.serve(listener, admin, shutdown).await;
    Ok(())
}
