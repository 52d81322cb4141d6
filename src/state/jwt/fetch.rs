//! `jwks_url` key sets (DESIGN.md §15): fetched at start, every `jwks_refresh`, and again (at
//! most once a minute) when a token names an unknown `kid`. A failed fetch keeps the last good
//! set serving; a successful one replaces the set whole, so a key that left the JWKS is dropped.
//!
//! Owns: [`Remote`] (one URL's live key set, shared by every snapshot whose config names that
//! URL, so a reload keeps its keys) and its fetches; the loop that walks the snapshot's URLs
//! is `control::keys`. Must not touch:
//! the request path beyond the lock-free [`Remote::want_refetch`] and one `ArcSwap` load.
//!
//! HTTP client: `ureq` (blocking, small, rustls on ring like the rest of tether), run with
//! `spawn_blocking` on the control runtime, never on a worker thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::KeySet;

/// The shortest time between two refetches caused by unknown `kid`s.
pub const KID_REFETCH_GAP: Duration = Duration::from_secs(60);
/// After a failed fetch, the next try comes after this (or `jwks_refresh`, if shorter).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// A fetch (connect, request, body) must finish within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS larger than this is refused.
pub const MAX_JWKS: u64 = 1 << 20;

/// Wakes the fetch loop (an unknown `kid`, a new URL after a reload).
static WAKE: Notify = Notify::const_new();

/// Milliseconds since the first call, plus one (0 means "never").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The live key set of one `jwks_url`.
pub struct Remote {
    pub url: String,
    pub keys: ArcSwap<KeySet>,
    refresh_ms: AtomicU64,
    /// When the next scheduled fetch is due (0: at once).
    next_ms: AtomicU64,
    /// A token named an unknown `kid`.
    wanted: AtomicBool,
    /// When the last `kid`-triggered fetch started (0: never).
    last_kid_ms: AtomicU64,
    /// A fetch is under way.
    busy: AtomicBool,
    /// Whether a fetch ever succeeded.
    loaded: AtomicBool,
}

impl Remote {
    pub fn new(url: String) -> Remote {
        WAKE.notify_one();
        Remote {
            url,
            keys: ArcSwap::from_pointee(KeySet::default()),
            refresh_ms: AtomicU64::new(600_000),
            next_ms: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            last_kid_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
        }
    }

    pub fn set_refresh(&self, d: Duration) {
        self.refresh_ms
            .store(d.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms.load(Ordering::Relaxed))
    }

    /// Whether a fetch ever succeeded.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// A token named a `kid` this set does not have: asks the control runtime for a refetch,
    /// unless one was made for that reason less than a minute ago. Lock-free; wakes the loop
    /// once per request for a refetch, not once per token.
    pub fn want_refetch(&self) {
        let last = self.last_kid_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms().saturating_sub(last) < KID_REFETCH_GAP.as_millis() as u64 {
            return;
        }
        if !self.wanted.swap(true, Ordering::AcqRel) {
            WAKE.notify_one();
        }
    }

    /// Starts a fetch on `rt`'s blocking pool when one is due or wanted and none is running.
    pub fn poll(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let now = now_ms();
        let wanted = self.wanted.load(Ordering::Acquire);
        if !wanted && now < self.next_ms.load(Ordering::Relaxed) {
            return;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        if wanted {
            self.last_kid_ms.store(now, Ordering::Relaxed);
            self.wanted.store(false, Ordering::Release);
        }
        let r = self.clone();
        rt.spawn_blocking(move || {
            r.fetch_now();
            r.busy.store(false, Ordering::Release);
        });
    }

    /// One fetch, now, on the calling thread. Returns whether it succeeded.
    pub fn fetch_now(&self) -> bool {
        let result = get(&self.url).and_then(|body| KeySet::from_jwks(&body));
        let ok = match result {
            Ok((set, skipped)) => {
                let old = self.keys.load().kids();
                let new = set.kids();
                // Logged when the set changes, not at every refresh.
                if old != new || !self.loaded() {
                    for s in &skipped {
                        tracing::warn!(url = %self.url, "JWKS key skipped: {s}");
                    }
                    tracing::info!(url = %self.url, kids = ?new, "JWKS loaded");
                }
                self.keys.store(Arc::new(set));
                self.loaded.store(true, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.url, "JWKS fetch failed, the last good key set keeps serving: {e}");
                false
            }
        };
        let wait = if ok {
            self.refresh()
        } else {
            self.refresh().min(RETRY_AFTER_FAILURE)
        };
        self.next_ms
            .store(now_ms() + wait.as_millis() as u64, Ordering::Relaxed);
        ok
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("tether/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    })
}

fn get(url: &str) -> Result<Vec<u8>, String> {
    let mut resp = agent()
        .get(url)
        .header("accept", "application/json")
        .call()
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status().as_u16()));
    }
    resp.body_mut()
        .with_config()
        .limit(MAX_JWKS)
        .read_to_vec()
        .map_err(|e| e.to_string())
}

/// Fetches the key set now, on this thread, unless it is loaded or a fetch is under way (the
/// start-up fetch; the loop's fetches go through [`Remote::poll`]).
pub fn fetch_if_unloaded(r: &Remote) {
    if !r.loaded() && !r.busy.swap(true, Ordering::AcqRel) {
        r.fetch_now();
        r.busy.store(false, Ordering::Release);
    }
}

/// Returns when the fetch loop should look at its URLs again: woken (an unknown `kid`, a new
/// URL after a reload) or 250 ms later.
pub async fn next_round() {
    tokio::select! {
        _ = WAKE.notified() => {}
        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
    }
}
