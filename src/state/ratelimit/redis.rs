//! The Redis bucket store (DESIGN.md §14): every tether instance of a fleet keeps its buckets in
//! one Redis, so they share one budget.
//!
//! Owns: the connection to `[redis] url`, keeping it alive, and the one server-side script a
//! request runs. Must not touch: what a limit does when the store fails (`on_store_error` is the
//! limiter's), metrics, keys' meaning.
//!
//! Runtimes: the connection and its driver task live on the control runtime (set once by
//! [`set_runtime`], before the first snapshot is built), which outlives every request. Requests
//! on Pingora's worker runtimes only hand a command to the driver through the multiplexed
//! connection's channel and await its reply (both runtime-agnostic); their timeout is their own
//! runtime's timer. Nothing of the redis crate spawns on a worker runtime: connecting and
//! reconnecting happen only in [`keep_connected`], on the control runtime.
//!
//! Failure: while there is no connection a request learns it at once (no wait); a request whose
//! call fails or exceeds `[redis] timeout` wakes the keeper, which pings the server and, if that
//! fails too, drops the connection and reconnects with backoff (100 ms doubling to 1 s) until
//! Redis is back. A dead Redis at startup therefore only means requests follow `on_store_error`
//! until it comes up.
//!
//! The script keeps the TAT (see `balance/gcra.rs`) in microseconds of the Redis server's own clock
//! (`TIME`), so instances whose clocks disagree still share one consistent bucket, and gives the
//! key a TTL of exactly the time until its bucket is full again, so idle buckets vanish.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use crate::balance::gcra::Gcra;

/// The runtime connections are made on.
static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Sets the runtime Redis connections live on (the control runtime). Call before the first
/// snapshot is built; later calls are ignored.
pub fn set_runtime(rt: &tokio::runtime::Handle) {
    let _ = RUNTIME.set(rt.clone());
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A live connection is pinged this often (and at once after a failed call)...
const PING_EVERY: Duration = Duration::from_secs(1);
/// ...and dropped when a ping takes longer than this: long enough for a merely slow server
/// (those requests follow `on_store_error` on their own timeouts), short enough to replace a
/// connection that silently died.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// GCRA on the server's clock. KEYS[1]: the bucket; ARGV[1]: T in microseconds (may have a
/// fraction); ARGV[2]: burst. Returns {1, 0} when allowed, {0, wait in µs} when not. TATs are
/// written with `%.17g` (Lua's `tostring` keeps only 14 digits: not enough for µs since 1970).
/// `replicate_commands` lets Redis before 5 write after `TIME` (a no-op from 5 on).
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - window
if wait > 0 then
  return {0, math.ceil(wait)}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, 0}
";

/// Why a request could not be decided.
#[derive(Debug)]
pub enum StoreError {
    /// No connection (Redis down, or not reached yet).
    NotConnected,
    /// The call took longer than `[redis] timeout`.
    Timeout,
    Redis(redis::RedisError),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotConnected => f.write_str("not connected"),
            StoreError::Timeout => f.write_str("timed out"),
            StoreError::Redis(e) => write!(f, "{e}"),
        }
    }
}

/// The client of `[redis]`: a `rediss://` URL with a `ca_file` or a client certificate is
/// built with them (the CA replaces the system roots); otherwise the URL says it all
/// (`rediss://` alone verifies against the system roots).
fn client(conf: &crate::config::RedisConf) -> redis::RedisResult<redis::Client> {
    let t = &conf.tls;
    if t.ca.is_none() && t.client.is_none() {
        return redis::Client::open(conf.url.as_str());
    }
    redis::Client::build_with_tls(
        conf.url.as_str(),
        redis::TlsCertificates {
            client_tls: t.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: t.ca.clone(),
        },
    )
}

/// One Redis server's connection, shared by every limit with `store = "redis"`; kept across
/// reloads while `[redis] url` is unchanged.
pub struct RedisStore {
    pub url: String,
    /// `rediss://`'s CA and client certificate (compared, with `url`, to reuse the store).
    pub tls: crate::config::RedisTls,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Wakes the keeper after a failed or slow call.
    trouble: tokio::sync::Notify,
    script: redis::Script,
}

impl RedisStore {
    /// A store for `[redis]` (validated) whose connection is made, and remade, in the
    /// background.
    pub fn start(conf: &crate::config::RedisConf) -> Arc<RedisStore> {
        let url = conf.url.as_str();
        let store = Arc::new(RedisStore {
            url: url.to_owned(),
            tls: conf.tls.clone(),
            conn: ArcSwapOption::empty(),
            trouble: tokio::sync::Notify::new(),
            script: redis::Script::new(SCRIPT),
        });
        match (client(conf), RUNTIME.get()) {
            (Ok(client), Some(rt)) => {
                rt.spawn(keep_connected(Arc::downgrade(&store), client));
            }
            (Err(e), _) => tracing::error!(url, "redis store unusable: {e}"),
            // Tools and unit tests: no control runtime, so never connected.
            (_, None) => tracing::debug!(url, "no runtime for redis: not connecting"),
        }
        store
    }

    /// Whether a connection is up (not whether the server answers in time).
    pub fn connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Runs one request of `key` against the shared bucket, within `timeout`: `Ok(Ok(()))` when
    /// allowed, `Ok(Err(wait))` (nanoseconds) when refused.
    pub async fn check(
        &self,
        key: &[u8],
        gcra: &Gcra,
        timeout: Duration,
    ) -> Result<Result<(), u64>, StoreError> {
        let Some(mut conn) = self.conn.load().as_deref().cloned() else {
            return Err(StoreError::NotConnected);
        };
        let ns = gcra.interval_nanos();
        let interval_us = format!("{}.{:03}", ns / 1000, ns % 1000);
        let mut call = self.script.key(key);
        call.arg(interval_us).arg(gcra.burst());
        let reply = tokio::time::timeout(timeout, call.invoke_async::<(i64, i64)>(&mut conn)).await;
        match reply {
            Ok(Ok((1, _))) => Ok(Ok(())),
            Ok(Ok((_, wait_us))) => Ok(Err((wait_us.max(1) as u64).saturating_mul(1000))),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.trouble.notify_one();
                }
                Err(StoreError::Redis(e))
            }
            Err(_) => {
                self.trouble.notify_one();
                Err(StoreError::Timeout)
            }
        }
    }
}

/// Connects, watches the connection, reconnects: until the store is dropped (a reload that
/// changed `[redis] url`, or the end of the process).
async fn keep_connected(store: Weak<RedisStore>, client: redis::Client) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    let url = match store.upgrade() {
        Some(s) => s.url.clone(),
        None => return,
    };
    let mut backoff = MIN_BACKOFF;
    let mut said_down = false;
    loop {
        if store.strong_count() == 0 {
            return;
        }
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if !said_down {
                    tracing::warn!(
                        url,
                        "cannot connect to redis (retrying in the background): {e}"
                    );
                    said_down = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(s) = store.upgrade() else {
            return;
        };
        s.conn.store(Some(Arc::new(conn.clone())));
        drop(s);
        tracing::info!(url, "connected to redis");
        (backoff, said_down) = (MIN_BACKOFF, false);
        // Watch it: a ping every PING_EVERY, or at once when a request had trouble.
        loop {
            let Some(s) = store.upgrade() else {
                tracing::debug!(url, "redis store no longer used: connection closed");
                return;
            };
            tokio::select! {
                _ = s.trouble.notified() => {}
                _ = tokio::time::sleep(PING_EVERY) => {}
            }
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(PING_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer to PING within {PING_TIMEOUT:?}"),
                    };
                    s.conn.store(None);
                    tracing::warn!(url, "lost the redis connection (reconnecting): {why}");
                    break;
                }
            }
        }
    }
}
