//! Live reload: the running [`Config`] behind an `ArcSwap`, replaced whole.
//!
//! Readers take a cheap snapshot (`load_full`) at the start of a request and keep it to the
//! end, so an edit never changes the rules under a request that is already running.

use super::Config;
use arc_swap::ArcSwap;
use std::sync::Arc;

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

    /// Swaps in a new, already validated config.
    pub fn set(&self, config: Config) {
        self.0.store(Arc::new(config));
    }
}
