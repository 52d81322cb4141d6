//! DNS discovery (DESIGN.md §22): each pool with `[pool.NAME.discover]` is resolved on the
//! control runtime, at start and then every `interval` (or its records' TTL, if shorter, never
//! below 1 s). The answers live here, per pool; every configuration tether installs is the
//! file's with them merged in ([`Discovery::merge`]), so a file reload keeps them and a changed
//! answer is applied like a reload of that pool (`Reloader::apply_discovered`: health and
//! sessions of unchanged backends kept, the §16 impact logged, `max_reload_move` obeyed).
//!
//! Owns: the discovered sets (applied and held back), the last resolution of each pool, the
//! per-pool resolution tasks and the start-up resolution. Must not touch: the snapshot (it goes
//! through the reloader, which installs configurations) or anything on the request path.

pub mod resolve;
pub mod tasks;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::config::{BackendConf, BackendSource, Config, DiscoverName, DiscoverOpts};
use resolve::{Answer, Failure};

/// The outcome of one resolution, as `/status` shows it.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub at: SystemTime,
    /// `changed`, `unchanged`, `held`, `error` or `empty`.
    pub result: &'static str,
    /// Backends in the answer (0 for a failure).
    pub answers: usize,
    /// Why it failed, or what was held back.
    pub detail: Option<String>,
}

#[derive(Debug)]
pub(super) struct PoolState {
    /// What the sets were resolved from: a new name starts a new history.
    pub(super) name: DiscoverName,
    /// In service: merged into every configuration installed.
    pub(super) applied: Vec<BackendConf>,
    /// An answer refused by `max_reload_move`, waiting for `POST /reload?force=true`.
    pub(super) held: Option<Vec<BackendConf>>,
    pub(super) last: Option<Resolution>,
    /// The failure being logged (`None` while resolutions succeed): logged once per change.
    pub(super) failing: Option<Failure>,
}

/// What a successful resolution did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Now in service.
    Changed,
    Unchanged,
    /// Refused by `max_reload_move`, waiting for a forced reload.
    Held,
}

impl Applied {
    /// The `result` label of `tether_discovery_resolutions_total`.
    fn label(self) -> &'static str {
        match self {
            Applied::Changed => "changed",
            Applied::Unchanged => "unchanged",
            Applied::Held => "held",
        }
    }
}

/// Puts `set` in `pool` as its discovered backends, in place of the ones it had. A discovered
/// backend whose id or address a file backend already has is left out: the file's wins.
pub fn put(pool: &mut crate::config::Pool, set: &[BackendConf]) {
    pool.backends.retain(|b| b.source == BackendSource::Static);
    let extra: Vec<BackendConf> = set
        .iter()
        .filter(|d| {
            !pool
                .backends
                .iter()
                .any(|s| s.id == d.id || s.addr == d.addr)
        })
        .cloned()
        .collect();
    pool.backends.extend(extra);
}

/// `id, id, …` for the log.
pub fn ids(backends: &[BackendConf]) -> String {
    backends
        .iter()
        .map(|b| b.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pools of `config` that discover, with what.
fn jobs(config: &Config) -> Vec<(String, DiscoverOpts)> {
    config
        .pools
        .iter()
        .filter_map(|p| p.discover.clone().map(|o| (p.name.clone(), o)))
        .collect()
}

/// The discovered backends of every pool (shared by the reloader and the resolution tasks).
#[derive(Default)]
pub struct Discovery {
    pools: Mutex<HashMap<String, PoolState>>,
    /// Woken after a reload changed a pool's `[discover]`, so its task resolves the new name at
    /// once.
    pub(super) reconfigured: tokio::sync::Notify,
}

impl Discovery {
    pub fn new() -> Discovery {
        Discovery::default()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PoolState>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the discovered backends of every pool of `config` with the current set
    /// (`with_held`: the held-back answer where there is one; none without `[discover]`).
    pub fn merge(&self, config: &mut Config, with_held: bool) {
        let pools = self.lock();
        for p in &mut config.pools {
            let st = pools.get(&p.name).filter(|_| p.discover.is_some());
            let set = match st {
                Some(st) if with_held && st.held.is_some() => st.held.as_deref(),
                Some(st) => Some(&st.applied[..]),
                None => None,
            };
            put(p, set.unwrap_or_default());
        }
    }

    /// After `config` was installed: pools that lost `[discover]` forget their sets; with
    /// `with_held`, held answers are in service now. Tells the resolution tasks to look at the
    /// configuration again.
    pub fn installed(&self, config: &Config, with_held: bool) {
        let mut pools = self.lock();
        pools.retain(|name, _| {
            config
                .pools
                .iter()
                .any(|p| &p.name == name && p.discover.is_some())
        });
        for (name, st) in pools.iter_mut() {
            if with_held {
                if let Some(held) = st.held.take() {
                    tracing::info!(pool = %name, "discovery: the held-back answer ({} backends) is in service (forced)", held.len());
                    st.applied = held;
                }
            }
        }
        drop(pools);
        self.reconfigured.notify_waiters();
    }

    /// Records a resolution of `pool` (resolved from `name`) that left the set as it was, or
    /// failed; logs a failure once per change of state. Returns the `result` label.
    pub(super) fn note(&self, pool: &str, name: &DiscoverName, outcome: Note) -> &'static str {
        let mut pools = self.lock();
        let st = pools.entry(pool.to_owned()).or_insert_with(|| PoolState {
            name: name.clone(),
            applied: Vec::new(),
            held: None,
            last: None,
            failing: None,
        });
        if st.name != *name {
            // A reload changed the name: the old set serves until the new name answers.
            st.name = name.clone();
            st.held = None;
            st.failing = None;
        }
        let (result, answers, detail) = match outcome {
            Note::Failed(f) => {
                if st.failing.as_ref() != Some(&f) {
                    tracing::warn!(
                        pool,
                        "discovery: {name}: {} ({}); keeping the last good set of {} backends",
                        f.message(),
                        f.result(),
                        st.applied.len()
                    );
                }
                let (r, m) = (f.result(), f.message().to_owned());
                st.failing = Some(f);
                (r, 0, Some(m))
            }
            Note::Resolved {
                applied,
                set,
                detail,
            } => {
                if st.failing.take().is_some() {
                    tracing::info!(
                        pool,
                        "discovery: {name} resolves again ({} backends)",
                        set.len()
                    );
                }
                let n = set.len();
                match applied {
                    Applied::Changed => {
                        st.applied = set;
                        st.held = None;
                    }
                    Applied::Unchanged => st.held = None,
                    Applied::Held => st.held = Some(set),
                }
                (applied.label(), n, detail)
            }
        };
        st.last = Some(Resolution {
            at: SystemTime::now(),
            result,
            answers,
            detail,
        });
        result
    }

    /// `/status`'s `discovery` of a pool (`None` without `[discover]`).
    pub fn status(&self, pool: &str, opts: Option<&DiscoverOpts>) -> Option<serde_json::Value> {
        let opts = opts?;
        let pools = self.lock();
        let st = pools.get(pool);
        let rfc3339 = crate::control::drain::rfc3339;
        let (kind, name) = match &opts.name {
            DiscoverName::Dns { host, port } => ("dns", format!("{host}:{port}")),
            DiscoverName::Srv(n) => ("srv", n.clone()),
        };
        Some(json!({
            kind: name,
            "interval": humantime::format_duration(opts.interval).to_string(),
            "resolvers": if opts.resolvers.is_empty() {
                json!("system")
            } else {
                json!(opts.resolvers.iter().map(ToString::to_string).collect::<Vec<_>>())
            },
            "backends": st.map_or(0, |s| s.applied.len()),
            "last_resolution": st.and_then(|s| s.last.as_ref()).map(|r| json!({
                "time": rfc3339(Some(r.at)),
                "result": r.result,
                "answers": r.answers,
                "detail": r.detail,
            })),
            "held": st.and_then(|s| s.held.as_ref()).map(|h| h.iter().map(|b| b.id.clone()).collect::<Vec<_>>()),
        }))
    }
}

pub(super) enum Note {
    Failed(Failure),
    Resolved {
        applied: Applied,
        set: Vec<BackendConf>,
        detail: Option<String>,
    },
}

/// When to resolve again: `interval`, or the answer's shortest TTL if that is sooner, never
/// sooner than 1 s.
pub(super) fn next_after(opts: &DiscoverOpts, ttl: Option<Duration>) -> Duration {
    ttl.map_or(opts.interval, |t| t.min(opts.interval))
        .max(DiscoverOpts::MIN_INTERVAL)
}

/// Resolves every discovered pool of `config` once, concurrently (each bounded by the
/// resolver's timeouts), records the answers, and merges them into `config`: the first
/// snapshot serves them. A name that does not resolve leaves its pool empty (503) until it does.
pub fn initial(
    d: &Discovery,
    config: &mut Config,
    metrics: &crate::state::metrics::Metrics,
    rt: &tokio::runtime::Handle,
) {
    let jobs = jobs(config);
    if jobs.is_empty() {
        return;
    }
    let results = rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for (pool, opts) in jobs {
            set.spawn(async move {
                let r = resolve_once(&opts).await;
                (pool, opts, r)
            });
        }
        let mut out = Vec::new();
        while let Some(Ok(r)) = set.join_next().await {
            out.push(r);
        }
        out
    });
    for (pool, opts, r) in results {
        let note = match r {
            Ok(a) => {
                tracing::info!(
                    pool = %pool,
                    "discovery: {}: {} backends ({})",
                    opts.name,
                    a.backends.len(),
                    ids(&a.backends)
                );
                Note::Resolved {
                    applied: Applied::Changed,
                    set: a.backends,
                    detail: None,
                }
            }
            Err(f) => {
                tracing::warn!(pool = %pool, "discovery: {}: {}: the pool has no backends until it resolves", opts.name, f.message());
                Note::Failed(f)
            }
        };
        let result = d.note(&pool, &opts.name, note);
        metrics
            .discovery_resolutions
            .with_label_values(&[&pool, result])
            .inc();
    }
    d.merge(config, false);
    publish(metrics, config, None);
}

/// Sets `tether_discovery_backends` for the pools of `config` that discover (the backends in
/// service that came from DNS), and drops the series of pools of `previous` that no longer do.
pub fn publish(m: &crate::state::metrics::Metrics, config: &Config, previous: Option<&Config>) {
    for p in config.pools.iter().filter(|p| p.discover.is_some()) {
        let n = p
            .backends
            .iter()
            .filter(|b| b.source == BackendSource::Dns)
            .count();
        m.discovery_backends
            .with_label_values(&[&p.name])
            .set(n as i64);
    }
    for old in previous.map_or(&[][..], |c| &c.pools[..]) {
        let still = config
            .pools
            .iter()
            .any(|p| p.name == old.name && p.discover.is_some());
        if old.discover.is_some() && !still {
            let _ = m.discovery_backends.remove_label_values(&[&old.name]);
            for r in crate::state::metrics::RESOLUTION_RESULTS {
                let _ = m.discovery_resolutions.remove_label_values(&[&old.name, r]);
            }
        }
    }
}

/// One resolution with a fresh resolver (start-up and `tether check`).
pub async fn resolve_once(opts: &DiscoverOpts) -> Result<Answer, Failure> {
    let r = resolve::resolver(&opts.resolvers).map_err(Failure::Error)?;
    resolve::resolve(&r, opts).await
}

/// What `Reloader::apply_discovered` needs from this module: the set recorded for `pool`, and
/// the recording of the outcome.
impl Discovery {
    /// Records a failed resolution (the last good set stays).
    pub fn failed(&self, pool: &str, name: &DiscoverName, f: Failure) -> &'static str {
        self.note(pool, name, Note::Failed(f))
    }

    /// Records a successful resolution and what it did with `set`; returns the `result` label.
    pub fn resolved(
        &self,
        pool: &str,
        name: &DiscoverName,
        applied: Applied,
        set: Vec<BackendConf>,
        detail: Option<String>,
    ) -> &'static str {
        self.note(
            pool,
            name,
            Note::Resolved {
                applied,
                set,
                detail,
            },
        )
    }

    /// The held-back answer of `pool`, if any.
    pub fn held(&self, pool: &str) -> Option<Vec<BackendConf>> {
        self.lock().get(pool).and_then(|s| s.held.clone())
    }

    /// Whether `set` is what `pool` has in service.
    pub fn is_applied(&self, pool: &str, set: &[BackendConf]) -> bool {
        self.lock().get(pool).is_some_and(|s| s.applied == set)
    }
}

/// `tether check`: resolves every `[discover]` name of `config` once. Each line is
/// `(is_warning, text)`: what a name resolved to, or a warning that it did not (not an error: a
/// pool whose name does not resolve yet starts empty and fills when it does).
pub fn check(config: &Config) -> Vec<(bool, String)> {
    let jobs = jobs(config);
    if jobs.is_empty() {
        return Vec::new();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![(true, format!("cannot resolve [discover] names: {e}"))],
    };
    rt.block_on(async {
        let mut lines = Vec::new();
        for (pool, opts) in jobs {
            lines.push(match resolve_once(&opts).await {
                Ok(a) => (
                    false,
                    format!(
                        "pool.{pool}.discover: {} resolves to {} backend{} ({})",
                        opts.name,
                        a.backends.len(),
                        if a.backends.len() == 1 { "" } else { "s" },
                        ids(&a.backends)
                    ),
                ),
                Err(f) => (
                    true,
                    format!(
                        "pool.{pool}.discover: {} did not resolve ({}): the pool has no discovered backends until it does",
                        opts.name,
                        f.message()
                    ),
                ),
            });
        }
        lines
    })
}
