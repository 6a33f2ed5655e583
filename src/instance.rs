//! One slate instance: its store, purge log, fills in flight and counters, built once at
//! start and shared by every request of both listeners.

use crate::ahead::Ahead;
use crate::clock::Clock;
use crate::coalesce::Coalescer;
use crate::config::{reload::Live, Config};
use crate::metrics::Metrics;
use crate::otel::Tracing;
use crate::purge::Purges;
use crate::queue::FillQueue;
use crate::store::{StoreError, Stores};
use crate::upstream::Upstream;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Everything one slate instance shares between its requests.
pub struct Shared {
    pub live: Live,
    pub store: Stores,
    pub purges: Purges,
    pub flights: Coalescer,
    /// Fills of distinct keys wait here for their turn against the upstream.
    pub queue: FillQueue,
    /// Entries to refresh before they expire (rules with `refresh_ahead`).
    pub ahead: Ahead,
    pub upstream: Upstream,
    pub clock: Clock,
    pub metrics: Metrics,
    /// The reports that cost the back end most over the last hour (`GET /top`).
    pub top: crate::top::Top,
    /// Fills and refreshes in flight; drained on shutdown.
    pub tasks: TaskTracker,
    /// Request traces (`[tracing]`), when on.
    pub(crate) otel: Option<Tracing>,
}

/// One slate instance. Serve it with `Instance::serve` (in the crate root).
#[derive(Clone)]
pub struct Instance {
    pub shared: Arc<Shared>,
}

impl Instance {
    /// Connects the store named by `config` and loads the purge log.
    pub async fn start(config: Config, clock: Clock) -> Result<Instance, StartError> {
        // Read once: the store names its purge log and event channel after the namespace,
        // so a reload keeps it (see `Live::reload`) and only a restart changes it.
        let store = Stores::open(&config.store, &config.cache.namespace, &clock).await?;
        Ok(Self::with_store(config, clock, store).await)
    }

    /// An instance on a store built by the caller (tests use this to share one memory store).
    pub async fn with_store(config: Config, clock: Clock, store: Stores) -> Instance {
        let purges = Purges::load(store.log.clone(), store.peers.clone(), clock.clone()).await;
        let queue = FillQueue::new(store.peers.clone(), &config.cache.namespace);
        // Traces are no reason not to serve: without an exporter, slate runs untraced.
        let otel = Tracing::start(&config.tracing).unwrap_or_else(|e| {
            tracing::error!(error = %e, "request tracing is off");
            None
        });
        let shared = Shared {
            otel,
            upstream: Upstream::new(&config.upstream),
            live: Live::new(config),
            store,
            purges,
            flights: Coalescer::new(),
            queue,
            ahead: Ahead::default(),
            clock,
            metrics: Metrics::default(),
            top: Default::default(),
            tasks: TaskTracker::new(),
        };
        Instance {
            shared: Arc::new(shared),
        }
    }
}
