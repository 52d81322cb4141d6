//! The [`Store`]: the one `ArcSwap<Snapshot>` and the only `store` into it (reload is
//! all-or-nothing: a complete snapshot is built, then swapped in one store), and the control
//! loop that rebuilds pool views and applies ejections sent from worker threads (with the guard
//! that keeps a pool from ejecting past `max_ejection_percent`). Must not touch: sockets or
//! request handling.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::types::*;
use crate::config::diff::Diff;
use crate::config::Config;
use crate::state::backend::{BackendState, Ejection, Registry};
use crate::state::metrics::Metrics;

/// Work handed from worker threads to the control runtime.
pub enum Control {
    /// Rebuild this pool's view (a backend of it changed state).
    Refresh(Arc<str>),
    /// Outlier detection asks for this backend to be ejected.
    Eject {
        pool: Arc<str>,
        state: Arc<BackendState>,
        why: Ejection,
    },
}

/// The published snapshot plus the registry; the single writer of both kinds of swap.
pub struct Store {
    current: ArcSwap<Snapshot>,
    registry: Arc<Registry>,
    /// Serializes writers (install and view refreshes) so a refresh never lands on a snapshot
    /// that is about to be replaced with views computed from older states. Never taken by
    /// requests.
    write: Mutex<()>,
    /// Pools whose views need a rebuild, sent by worker threads (passive health) to the
    /// control runtime. Unset (unit tests, tools): rebuilt inline.
    refresher: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Control>>,
}

impl Store {
    /// Builds generation 1 from `config`.
    pub fn new(config: Config, registry: Arc<Registry>) -> Store {
        let snap = Snapshot::build(Arc::new(config), &registry, 1, None);
        registry.mark_started();
        registry.metrics().generation.set(1);
        registry.metrics().init_reload_series();
        Store {
            current: ArcSwap::from_pointee(snap),
            registry,
            write: Mutex::new(()),
            refresher: std::sync::OnceLock::new(),
        }
    }

    /// The downstream limits of the current configuration (no reference count taken).
    pub fn limits(&self) -> crate::config::Limits {
        self.current.load().config.server.limits
    }

    /// Whether plain listeners take cleartext HTTP/2 with prior knowledge (`[server] h2c`).
    pub fn h2c(&self) -> bool {
        self.current.load().config.server.h2c
    }

    /// The current snapshot (one atomic load and reference count).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.registry.metrics()
    }

    /// Builds a snapshot of `config` as the next generation and swaps it in with one store.
    /// Backends that left the config leave the registry; their metric series go with them.
    pub fn install(&self, config: Config) -> (Arc<Snapshot>, Diff) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let diff = Diff::between(&old.config, &config);
        let snap = Arc::new(Snapshot::build(
            Arc::new(config),
            &self.registry,
            old.generation + 1,
            Some(&old),
        ));
        self.current.store(snap.clone());
        self.forget_removed(&old, &snap);
        self.registry
            .queues()
            .installed(snap.pools.iter().filter_map(|p| p.breaker.as_ref()));
        self.metrics().generation.set(snap.generation as i64);
        (snap, diff)
    }

    fn forget_removed(&self, old: &Snapshot, new: &Snapshot) {
        let keep: Vec<(&str, &str)> = new
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(move |b| (&*p.name, &*b.id)))
            .collect();
        self.registry.retain(&keep);
        let m = self.metrics();
        let new_sets: std::collections::HashSet<[String; 3]> =
            new.request_label_sets().into_iter().collect();
        for set in old.request_label_sets() {
            if !new_sets.contains(&set) {
                for c in crate::state::metrics::CODE_CLASSES {
                    let _ = m
                        .requests
                        .remove_label_values(&[&set[0], &set[1], &set[2], c]);
                }
            }
        }
        old.rate_limits.forget_removed(&new.rate_limits, m);
        for j in &old.jwts {
            if !new.jwts.iter().any(|n| n.name == j.name) {
                for r in crate::state::jwt::RESULTS {
                    let _ = m.jwt.remove_label_values(&[&j.name, r]);
                }
            }
        }
        for p in &old.pools {
            if new.pool(&p.name).is_none() {
                let _ = m.duration.remove_label_values(&[&p.name]);
                let _ = m.retries.remove_label_values(&[&p.name]);
                for o in crate::state::metrics::OUTCOMES {
                    let _ = m.affinity.remove_label_values(&[&p.name, o]);
                }
            }
        }
    }

    /// Runs the control work that worker threads hand over — view rebuilds
    /// ([`Store::request_refresh`]) and outlier ejections ([`Store::request_ejection`]) — on `rt`
    /// (the control runtime), and rebuilds the views of pools whose backends are ramping up
    /// under slow start twice a second until the ramp is over.
    pub fn start_refresher(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
        if self.refresher.set(tx).is_err() {
            return;
        }
        let store = Arc::downgrade(self);
        let handle = rt.clone();
        rt.spawn(async move {
            while let Some(first) = rx.recv().await {
                let Some(store) = store.upgrade() else {
                    return;
                };
                let mut pools: Vec<Arc<str>> = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                    match msg {
                        Control::Refresh(p) => {
                            if !pools.contains(&p) {
                                pools.push(p);
                            }
                        }
                        Control::Eject { pool, state, why } => {
                            store.eject(&pool, &state, why, &handle);
                        }
                    }
                }
                for p in pools {
                    store.refresh_pool(&p);
                }
            }
        });
        let store = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                let snap = store.load();
                for p in &snap.pools {
                    if p.view.load().ramping
                        || p.conf.slow_start.is_some_and(|w| {
                            p.backends.iter().any(|b| b.state.in_slow_start(Some(w)))
                        })
                    {
                        store.refresh_pool(&p.name);
                    }
                }
            }
        });
    }

    /// Asks for `pool`'s view to be rebuilt: from a worker thread, a message to the control
    /// runtime (no lock, no ring build on the request path).
    pub fn request_refresh(&self, pool: &Arc<str>) {
        match self.refresher.get() {
            Some(tx) if tx.send(Control::Refresh(pool.clone())).is_ok() => {}
            _ => self.refresh_pool(pool),
        }
    }

    /// Asks for a backend to be ejected by outlier detection (the control runtime applies the
    /// pool-wide share guard). Without a control runtime (tools, unit tests) nothing happens.
    pub fn request_ejection(&self, pool: &Arc<str>, state: &Arc<BackendState>, why: Ejection) {
        if let Some(tx) = self.refresher.get() {
            let _ = tx.send(Control::Eject {
                pool: pool.clone(),
                state: state.clone(),
                why,
            });
        }
    }

    /// Ejects `state` unless that would take more than `max_ejected_percent` of the pool (rounded
    /// down) out, or its last backend; rebuilds the pool's view and schedules its return.
    /// Control runtime only. Returns whether it ejected.
    fn eject(
        self: &Arc<Self>,
        pool: &Arc<str>,
        state: &Arc<BackendState>,
        why: Ejection,
        rt: &tokio::runtime::Handle,
    ) -> bool {
        let snap = self.load();
        let Some(p) = snap.pool(pool) else {
            return false;
        };
        let Some(opts) = p.conf.outlier else {
            return false;
        };
        if state.is_ejected() || !p.backends.iter().any(|b| Arc::ptr_eq(&b.state, state)) {
            return false;
        }
        let n = p.backends.len();
        let ejected = p.backends.iter().filter(|b| b.state.is_ejected()).count();
        let allowed = n * opts.max_ejected_percent as usize / 100;
        if ejected + 1 > allowed || ejected + 1 >= n {
            tracing::info!(pool = %pool, backend = %state.id, reason = why.as_str(), "outlier not ejected: {ejected} of {n} already out (max_ejected_percent = {})", opts.max_ejected_percent);
            return false;
        }
        let d = state.eject(why, &opts);
        // The view follows at once; /status and tether_backend_state show the ejection from it.
        self.refresh_pool(pool);
        tracing::warn!(pool = %pool, backend = %state.id, reason = why.as_str(), "backend ejected for {}", humantime::format_duration(d));
        let (store, pool, state) = (Arc::downgrade(self), pool.clone(), state.clone());
        rt.spawn(async move {
            tokio::time::sleep(d).await;
            state.return_from_ejection();
            tracing::info!(pool = %pool, backend = %state.id, "backend returns from ejection");
            if let Some(store) = store.upgrade() {
                store.refresh_pool(&pool);
            }
        });
        true
    }

    /// Rebuilds the live view of `pool` in the current snapshot after a backend of it changed
    /// state. Off the request path.
    pub fn refresh_pool(&self, pool: &str) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.current.load().pool(pool) {
            p.refresh();
        }
    }
}
