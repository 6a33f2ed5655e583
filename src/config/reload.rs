//! Live reload: the running [`Config`] behind an `ArcSwap`, replaced whole.
//!
//! Readers take a cheap snapshot (`get`) at the start of a request and keep it to the end,
//! so an edit never changes the rules under a request that is already running. A new file
//! is parsed and validated completely before it is swapped in; a bad edit is logged with its
//! line and key, and the last good config stays in force.
//!
//! The watcher watches the config's *directory*, not the file: editors save by writing a
//! temporary file and renaming it over the old one, which replaces the inode a file watch
//! would be following.

use super::Config;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The config in force, shared by every part of one instance.
#[derive(Clone)]
pub struct Live(Arc<ArcSwap<Config>>);

impl Live {
    pub fn new(config: Config) -> Self {
        Live(Arc::new(ArcSwap::from_pointee(config)))
    }

    /// A snapshot of the config in force now.
    pub fn get(&self) -> Arc<Config> {
        self.0.load_full()
    }

    /// A snapshot for the length of one request: no reference count is touched (a shared
    /// count would be written by every request on every core), unless the thread holds
    /// many guards at once, when arc-swap falls back to a full `Arc` by itself.
    pub fn guard(&self) -> arc_swap::Guard<Arc<Config>> {
        self.0.load()
    }

    /// Swaps in a new, already validated config.
    pub fn set(&self, config: Config) {
        self.0.store(Arc::new(config));
    }

    /// Reads `path` again and swaps it in if it is valid and changed. Returns whether the
    /// config changed; a bad file is an error and changes nothing.
    ///
    /// Some settings are read once at start-up and cannot follow a reload: the listeners,
    /// `max_connections`, the store, `[tracing]` and `cache.namespace`. A change to any of them is
    /// logged as needing a restart. The namespace is also pinned to the running one in the
    /// config swapped in: the store named its purge-log keys and its event channel after it
    /// when it connected, so entries keyed under a new namespace would be purged and
    /// announced under the old one (see `store::redis`).
    pub fn reload(&self, path: &Path) -> Result<bool, super::ConfigError> {
        let mut new = Config::load(path)?;
        let old = self.get();
        if new.version == old.version {
            return Ok(false);
        }
        let mut restart = Vec::new();
        if new.server.listen != old.server.listen
            || new.server.admin_listen != old.server.admin_listen
        {
            restart.push("listen addresses");
        }
        if new.server.max_connections != old.server.max_connections {
            restart.push("server.max_connections");
        }
        if new.store.kind != old.store.kind {
            restart.push("the store");
        }
        if new.tracing != old.tracing {
            restart.push("[tracing]");
        }
        if new.cache.namespace != old.cache.namespace {
            restart.push("cache.namespace");
            new.cache.namespace = old.cache.namespace.clone();
        }
        if !restart.is_empty() {
            tracing::warn!(
                "{} changed: takes effect only after a restart",
                restart.join(", ")
            );
        }
        tracing::info!(version = %new.version, rules = new.rules.len(), "config reloaded");
        self.set(new);
        Ok(true)
    }

    /// Reloads, logging the outcome; for signal handlers and watchers.
    pub fn reload_logged(&self, path: &Path) {
        if let Err(e) = self.reload(path) {
            tracing::error!("config reload refused, keeping the running config:\n{e}");
        }
    }
}

/// Watches `path` (through its directory) and reloads on every change, until dropped.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching; changes are debounced by 100 ms, so one save is one reload.
pub fn watch(path: &Path, live: Live) -> notify::Result<Watcher> {
    use notify::Watcher as _;
    let path: PathBuf = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let ours = ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
            let relevant = !matches!(ev.kind, notify::EventKind::Access(_));
            if ours && relevant {
                let _ = tx.send(());
            }
        }
    })?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            if path.exists() {
                live.reload_logged(&path);
            }
        }
    });
    Ok(Watcher { _inner: w, task })
}
