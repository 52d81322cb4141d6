//! The resolution tasks of DNS discovery (DESIGN.md §22): one per pool with `[discover]`, on
//! the control runtime, resolving every `interval` (or sooner, by TTL) and handing each outcome
//! to `Reloader::apply_discovered`; and a supervisor that starts the task of a pool that gains
//! `[discover]` by a reload. A task ends when its pool or its `[discover]` is gone.
//!
//! Owns: the timing and the resolvers of running pools. Must not touch: the discovered sets
//! (they change only through the reloader, serialized with file reloads).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::resolve::{self, Failure};
use super::{next_after, Note};
use crate::control::reload::Reloader;

/// Starts the resolution loop of every discovered pool on `rt`, and a supervisor that starts
/// the loop of a pool that gains `[discover]` by a reload.
pub fn start(reloader: Arc<Reloader>, rt: &tokio::runtime::Handle) {
    let handle = rt.clone();
    rt.spawn(async move {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        loop {
            let snap = reloader.store().load();
            running.retain(|_, h| !h.is_finished());
            for p in &snap.pools {
                if p.conf.discover.is_some() && !running.contains_key(&*p.name) {
                    let task = handle.spawn(pool_loop(reloader.clone(), p.name.to_string()));
                    running.insert(p.name.to_string(), task);
                }
            }
            drop(snap);
            let d = reloader.discovery().clone();
            tokio::select! {
                _ = d.reconfigured.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

/// Resolves `pool`'s name until the pool or its `[discover]` is gone.
async fn pool_loop(reloader: Arc<Reloader>, pool: String) {
    let discovery = reloader.discovery().clone();
    let mut resolver: Option<(Vec<SocketAddr>, hickory_resolver::TokioAsyncResolver)> = None;
    // The start-up resolution was just done: the first pass waits its interval, unless the pool
    // has not resolved yet.
    let mut first = true;
    loop {
        let Some(opts) = reloader
            .store()
            .load()
            .pool(&pool)
            .and_then(|p| p.conf.discover.clone())
        else {
            return;
        };
        let resolved = discovery.lock().get(&pool).is_some_and(|s| {
            s.name == opts.name
                && s.last
                    .as_ref()
                    .is_some_and(|l| matches!(l.result, "changed" | "unchanged" | "held"))
        });
        let wait = if first && resolved {
            Some(opts.interval)
        } else {
            None
        };
        first = false;
        if let Some(wait) = wait {
            let woken = discovery.reconfigured.notified();
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        if resolver.as_ref().is_none_or(|(s, _)| *s != opts.resolvers) {
            resolver = match resolve::resolver(&opts.resolvers) {
                Ok(r) => Some((opts.resolvers.clone(), r)),
                Err(e) => {
                    discovery.note(&pool, &opts.name, Note::Failed(Failure::Error(e)));
                    reloader
                        .store()
                        .metrics()
                        .discovery_resolutions
                        .with_label_values(&[&pool, "error"])
                        .inc();
                    tokio::time::sleep(opts.interval).await;
                    continue;
                }
            };
        }
        let Some((_, r)) = &resolver else { continue };
        let outcome = resolve::resolve(r, &opts).await;
        let ttl = outcome.as_ref().ok().and_then(|a| a.ttl);
        let (me, p, o) = (reloader.clone(), pool.clone(), opts.clone());
        let _ = tokio::task::spawn_blocking(move || me.apply_discovered(&p, &o, outcome)).await;
        let woken = discovery.reconfigured.notified();
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(next_after(&opts, ttl)) => {}
        }
    }
}
