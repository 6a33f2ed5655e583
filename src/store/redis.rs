//! Redis and Redis Cluster: the store shared by every instance.
//!
//! At most one `GET` per lookup (lookups of one key in flight together share one:
//! [`super::flights`]), one `SET ... PX` per fill (Redis reclaims entries on its own), and
//! for purges two keys under one hash tag, so that the purge scripts run on one shard of a
//! cluster too:
//! - `slate:<ns>:{purge}:seq`: the purge sequence number (`INCR`ed by each purge);
//! - `slate:<ns>:{purge}:log`: a sorted set of purge records scored by their number.
//!
//! The connection (a `ConnectionManager`, or a cluster connection) reconnects on its own; a
//! failed command is reported to the caller, which fails open (treats it as a miss).

use super::flights::ReadFlights;
use super::{
    Coordination, Event, PurgeLog, PurgeRecord, PurgeRequest, SlotGrant, Slots, Storage,
    StoreError, StoreResult, StoreStats,
};
use crate::entry::Entry;
use crate::key;
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::ConnectionLike;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const ADD_SCRIPT: &str = r#"
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
local old = redis.call('ZRANGE', KEYS[2], 0, 31)
for _, m in ipairs(old) do
  local exp = tonumber(string.match(m, '^[hs](%d+)'))
  if exp and exp < tonumber(ARGV[2]) then redis.call('ZREM', KEYS[2], m) else break end
end
return seq
"#;

const SINCE_SCRIPT: &str = r#"
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local recs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], seq, 'WITHSCORES')
return {seq, recs}
"#;

const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// A fill queue slot: Redis's own clock (so instances' clocks cannot disagree), lapsed
/// holders dropped, then a slot of all fills' and of the rule's (KEYS[2]), both or neither.
/// The sets themselves lapse when nobody has used them for a while.
const SLOT_ACQUIRE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], lease * 4)
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 4)
return 1
"#;

const SLOT_RENEW_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local held = 0
for _, k in ipairs(KEYS) do
  if redis.call('ZSCORE', k, ARGV[1]) then
    redis.call('ZADD', k, 'XX', now + lease, ARGV[1])
    redis.call('PEXPIRE', k, lease * 4)
    held = 1
  end
end
return held
"#;

const SLOT_RELEASE_SCRIPT: &str = r#"
for _, k in ipairs(KEYS) do redis.call('ZREM', k, ARGV[1]) end
return 1
"#;

const UNLOCK_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A slot script's invocation with its keys: all fills' slots, and the rule's when it caps
/// its share.
fn slot_keys<'a>(script: &'a redis::Script, slots: &Slots) -> redis::ScriptInvocation<'a> {
    let mut inv = script.key(&slots.key);
    if let Some((k, _)) = &slots.rule {
        inv.key(k);
    }
    inv
}

/// See `connect`: a backstop, far above any per-command timeout.
const CONNECTION_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes per second a store write is granted on top of the base timeout: an 8 MiB entry
/// gets 0.8 s more than a small one.
const WRITE_BYTES_PER_SEC: u64 = 10 << 20;

/// A circuit breaker: after `TRIP_AFTER` consecutive failures the store is skipped for
/// `OPEN_FOR`, so that no request waits on a dead or hung Redis; then one command probes it
/// (half-open), and a success closes the circuit again.
///
/// Plain atomics, and while Redis answers, only reads: every Redis hit passes through here,
/// and a lock or a write to a shared cache line per command would be paid on every core.
pub struct Breaker {
    failures: std::sync::atomic::AtomicU32,
    /// While open: until when, in ms since `base` (at least 1). 0: closed.
    open_until_ms: std::sync::atomic::AtomicU64,
    base: std::time::Instant,
}

const TRIP_AFTER: u32 = 3;
const OPEN_FOR: Duration = Duration::from_millis(1000);

impl Breaker {
    fn new() -> Self {
        Breaker {
            failures: std::sync::atomic::AtomicU32::new(0),
            open_until_ms: std::sync::atomic::AtomicU64::new(0),
            base: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1: a deadline is never 0, which means "closed".
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn allow(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let until = self.open_until_ms.load(Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // Half-open: the one caller that moves the deadline probes; the others keep
        // skipping until it answers.
        let next = now + OPEN_FOR.as_millis() as u64;
        self.open_until_ms
            .compare_exchange(until, next, AcqRel, Acquire)
            .is_ok()
    }

    fn record<T>(&self, r: &StoreResult<T>) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        match r {
            Ok(_) => {
                // Healthy: two reads, no write.
                if self.failures.load(Relaxed) != 0 && self.failures.swap(0, Relaxed) >= TRIP_AFTER
                {
                    tracing::info!("store answering again; circuit closed");
                }
                if self.open_until_ms.load(Relaxed) != 0 {
                    self.open_until_ms.store(0, Release);
                }
            }
            Err(_) => {
                let n = self.failures.fetch_add(1, Relaxed) + 1;
                if n >= TRIP_AFTER {
                    if n == TRIP_AFTER {
                        tracing::warn!(
                            "store failing; circuit open: requests skip it and go upstream"
                        );
                    }
                    let until = self.now_ms() + OPEN_FOR.as_millis() as u64;
                    self.open_until_ms.store(until, Release);
                }
            }
        }
    }
}

pub struct RedisStore<C> {
    breaker: Breaker,
    /// Lookups of one key in flight together share one `GET` ([`super::flights`]).
    flights: Arc<ReadFlights>,
    conn: C,
    channel: String,
    events: broadcast::Sender<Event>,
    /// Whether the subscription is up now (see [`Coordination::subscribed`]).
    events_up: Arc<std::sync::atomic::AtomicBool>,
    subscriber: tokio::task::AbortHandle,
    renew: redis::Script,
    unlock: redis::Script,
    slot_acquire: redis::Script,
    slot_renew: redis::Script,
    slot_release: redis::Script,
    name: &'static str,
    seq_key: String,
    log_key: String,
    add: redis::Script,
    since: redis::Script,
    timeout: Duration,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

/// Connects to one Redis server. The connection is made lazily, so slate starts (and serves,
/// uncached) even while Redis is down.
pub fn connect(
    url: &str,
    namespace: &str,
    timeout: Duration,
) -> StoreResult<RedisStore<redis::aio::ConnectionManager>> {
    let client = redis::Client::open(url).map_err(unavailable)?;
    // The connection's own response timeout only guards against a hung connection; each
    // command gets its own, sized to what it carries (see `RedisStore::run`).
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(CONNECTION_RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(unavailable)?;
    Ok(RedisStore::with(
        conn,
        "redis",
        namespace,
        timeout,
        vec![client],
    ))
}

/// Connects to a Redis Cluster through its seed nodes.
pub async fn connect_cluster(
    nodes: &[String],
    namespace: &str,
    timeout: Duration,
) -> StoreResult<RedisStore<redis::cluster_async::ClusterConnection>> {
    let client = redis::cluster::ClusterClient::builder(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(CONNECTION_RESPONSE_TIMEOUT)
        .retries(2)
        .build()
        .map_err(unavailable)?;
    let conn = client.get_async_connection().await.map_err(unavailable)?;
    // Classic pub/sub is broadcast over the cluster bus: subscribing on any one node hears
    // every PUBLISH, so the subscriber takes the seed nodes in turn.
    let subs = nodes
        .iter()
        .filter_map(|n| redis::Client::open(n.as_str()).ok())
        .collect();
    Ok(RedisStore::with(
        conn,
        "redis-cluster",
        namespace,
        timeout,
        subs,
    ))
}

impl<C> Drop for RedisStore<C> {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// Keeps one pub/sub subscription up, forwarding events; reconnects on its own, and says
/// `Lost` / `Resubscribed` so in-process copies are dropped when events may have been missed.
async fn subscribe(
    clients: Vec<redis::Client>,
    channel: String,
    tx: broadcast::Sender<Event>,
    up: Arc<std::sync::atomic::AtomicBool>,
    flights: Arc<ReadFlights>,
) {
    use futures_util::StreamExt;
    let mut i = 0usize;
    loop {
        let client = &clients[i % clients.len().max(1)];
        i += 1;
        match tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await {
            Ok(Ok(mut ps)) => {
                if ps.subscribe(&channel).await.is_ok() {
                    up.store(true, std::sync::atomic::Ordering::SeqCst);
                    flights.flush();
                    let _ = tx.send(Event::Resubscribed);
                    let mut msgs = ps.on_message();
                    while let Some(m) = msgs.next().await {
                        if let Some(e) = std::str::from_utf8(m.get_payload_bytes())
                            .ok()
                            .and_then(Event::decode)
                        {
                            // Another instance stored or dropped something: reads sent
                            // before now answer no lookup that starts after this event.
                            if !matches!(e, Event::Purged { .. } | Event::SlotFreed) {
                                flights.flush();
                            }
                            let _ = tx.send(e);
                        }
                    }
                    tracing::warn!("store event subscription lost; reconnecting");
                    up.store(false, std::sync::atomic::Ordering::SeqCst);
                    flights.flush();
                    let _ = tx.send(Event::Lost);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

impl<C> RedisStore<C> {
    fn with(
        conn: C,
        name: &'static str,
        namespace: &str,
        timeout: Duration,
        subs: Vec<redis::Client>,
    ) -> Self {
        let channel = key::events_channel(namespace);
        let (events, _) = broadcast::channel(4096);
        let events_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flights = Arc::new(ReadFlights::default());
        let subscriber = if subs.is_empty() {
            tokio::spawn(async {}).abort_handle()
        } else {
            let task = subscribe(
                subs,
                channel.clone(),
                events.clone(),
                events_up.clone(),
                flights.clone(),
            );
            tokio::spawn(task).abort_handle()
        };
        RedisStore {
            flights,
            events_up,
            breaker: Breaker::new(),
            conn,
            channel,
            events,
            subscriber,
            renew: redis::Script::new(RENEW_SCRIPT),
            unlock: redis::Script::new(UNLOCK_SCRIPT),
            slot_acquire: redis::Script::new(SLOT_ACQUIRE_SCRIPT),
            slot_renew: redis::Script::new(SLOT_RENEW_SCRIPT),
            slot_release: redis::Script::new(SLOT_RELEASE_SCRIPT),
            name,
            seq_key: key::purge_seq_key(namespace),
            log_key: key::purge_log_key(namespace),
            add: redis::Script::new(ADD_SCRIPT),
            since: redis::Script::new(SINCE_SCRIPT),
            timeout,
        }
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Runs one command with the store's timeout on top of the connection's own (which a
    /// connection stuck in reconnecting does not always apply).
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> StoreResult<T> {
        self.run_for(cmd, self.timeout).await
    }

    /// Runs one command within `timeout`, through the circuit breaker.
    async fn run_for<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        timeout: Duration,
    ) -> StoreResult<T> {
        if !self.breaker.allow() {
            return Err(StoreError::Unavailable(
                "circuit open: the store is failing".into(),
            ));
        }
        let mut conn = self.conn.clone();
        let r = match tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Timeout),
        };
        self.breaker.record(&r);
        r
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> StoreResult<T> {
        if !self.breaker.allow() {
            return Err(StoreError::Unavailable(
                "circuit open: the store is failing".into(),
            ));
        }
        let mut conn = self.conn.clone();
        let r = match tokio::time::timeout(self.timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Timeout),
        };
        self.breaker.record(&r);
        r
    }
}

impl<C> Storage for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<Arc<Entry>>>> {
        async move {
            self.flights
                .read(key, || async {
                    let mut cmd = redis::cmd("GET");
                    cmd.arg(key);
                    let raw: Option<Vec<u8>> = self.run(cmd).await?;
                    Ok(raw.and_then(|v| match Entry::decode(Bytes::from(v)) {
                        Ok(e) => Some(Arc::new(e)),
                        Err(e) => {
                            tracing::warn!(key, error = %e, "unusable entry in Redis; treating it as a miss");
                            None
                        }
                    }))
                })
                .await
        }
        .boxed()
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            reads_joined: Some(self.flights.joined.get()),
            l1: None,
        }
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: Arc<Entry>,
        keep: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let value = entry.encode();
            let timeout = self.timeout
                + Duration::from_millis(value.len() as u64 * 1000 / WRITE_BYTES_PER_SEC);
            let mut cmd = redis::cmd("SET");
            cmd.arg(key)
                .arg(value.as_ref())
                .arg("PX")
                .arg(keep.as_millis().max(1) as u64);
            let r = self.run_for::<()>(cmd, timeout).await;
            // Written (or perhaps written, on a timeout): reads sent before are not joined.
            self.flights.bump(key);
            r
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            let r = self.run::<()>(cmd).await;
            self.flights.bump(key);
            r
        }
        .boxed()
    }
}

impl<C> PurgeLog for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn purge_add<'a>(
        &'a self,
        req: &'a PurgeRequest,
        expires_ms: u64,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let now_ms =
                expires_ms.saturating_sub(crate::policy::MAX_ENTRY_LIFETIME.as_millis() as u64);
            let mut inv = self.add.key(&self.seq_key);
            inv.key(&self.log_key)
                .arg(req.encode(expires_ms))
                .arg(now_ms);
            let seq = self.invoke::<u64>(inv).await?;
            // Other instances apply it on this event within a round trip; their poll is
            // only the net under it.
            if let Err(e) = self.publish(Event::Purged { seq }).await {
                tracing::warn!(error = %e, "purge logged but not announced; instances will poll it");
            }
            Ok(seq)
        }
        .boxed()
    }

    fn purge_since(&self, seq: u64) -> BoxFuture<'_, StoreResult<(u64, Vec<PurgeRecord>)>> {
        async move {
            let mut inv = self.since.key(&self.seq_key);
            inv.key(&self.log_key).arg(seq);
            let (cur, flat): (u64, Vec<String>) = self.invoke(inv).await?;
            let mut out = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks_exact(2) {
                let (Some((req, expires_ms)), Ok(seq)) =
                    (PurgeRequest::decode(&pair[0]), pair[1].parse::<u64>())
                else {
                    tracing::warn!(record = %pair[0], "unreadable purge record skipped");
                    continue;
                };
                out.push(PurgeRecord {
                    seq,
                    req,
                    expires_ms,
                });
            }
            Ok((cur, out))
        }
        .boxed()
    }

    fn purge_seq(&self) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(&self.seq_key);
            let v: Option<u64> = self.run(cmd).await?;
            Ok(v.unwrap_or(0))
        }
        .boxed()
    }
}

impl<C> Coordination for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn acquire<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(lock)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(lease.as_millis().max(1) as u64);
            let r: Option<String> = self.run(cmd).await?;
            if r.is_some() {
                // Whoever held it before may have stored the entry (or a variant) just
                // now: the lookup that follows must not be answered by an older read.
                self.flights.flush();
            }
            Ok(r.is_some())
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        lock: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut inv = self.renew.key(lock);
            inv.arg(token).arg(lease.as_millis().max(1) as u64);
            let r: i64 = self.invoke(inv).await?;
            Ok(r == 1)
        }
        .boxed()
    }

    fn release<'a>(&'a self, lock: &'a str, token: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut inv = self.unlock.key(lock);
            inv.arg(token);
            self.invoke::<i64>(inv).await.map(|_| ())
        }
        .boxed()
    }

    fn held<'a>(&'a self, lock: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(lock);
            let n: i64 = self.run(cmd).await?;
            Ok(n > 0)
        }
        .boxed()
    }

    fn publish(&self, event: Event) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let Some(msg) = event.encode() else {
                return Ok(());
            };
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(&self.channel).arg(msg);
            self.run::<i64>(cmd).await.map(|_| ())
        }
        .boxed()
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn acquire_slot<'a>(
        &'a self,
        slots: &'a Slots,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<SlotGrant>> {
        async move {
            let mut inv = slot_keys(&self.slot_acquire, slots);
            inv.arg(token)
                .arg(lease.as_millis().max(1) as u64)
                .arg(slots.limit)
                .arg(slots.rule.as_ref().map_or(0, |(_, n)| *n));
            Ok(match self.invoke::<i64>(inv).await? {
                1 => SlotGrant::Granted,
                -1 => SlotGrant::RuleFull,
                _ => SlotGrant::Full,
            })
        }
        .boxed()
    }

    fn renew_slot<'a>(
        &'a self,
        slots: &'a Slots,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut inv = slot_keys(&self.slot_renew, slots);
            inv.arg(token).arg(lease.as_millis().max(1) as u64);
            Ok(self.invoke::<i64>(inv).await? == 1)
        }
        .boxed()
    }

    fn release_slot<'a>(
        &'a self,
        slots: &'a Slots,
        token: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut inv = slot_keys(&self.slot_release, slots);
            inv.arg(token);
            self.invoke::<i64>(inv).await?;
            // Instances waiting for a slot try again now, not at their next poll.
            let _ = self.publish(Event::SlotFreed).await;
            Ok(())
        }
        .boxed()
    }

    fn subscribed(&self) -> bool {
        self.events_up.load(std::sync::atomic::Ordering::SeqCst)
    }
}
