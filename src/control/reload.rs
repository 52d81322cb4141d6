//! Configuration reload (DESIGN.md §7): SIGHUP, `POST /reload` and the optional file watcher all
//! end in [`Reloader::reload`]: read → parse → validate → refuse socket-level changes → build the
//! snapshot → one store. Any failure leaves the running snapshot untouched.
//!
//! Owns: reload triggers, their serialization and their bookkeeping (metrics, logs, systemd
//! notifications). Must not touch: snapshot internals (it hands a `Config` to `Store::install`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{self, Config, DiscoverOpts};
use crate::control::discover::resolve::{Answer, Failure};
use crate::control::discover::{self, Applied, Discovery};
use crate::control::health::Health;
use crate::snapshot::Store;
use crate::state::tls::Certs;

/// Why a reload did not happen. Each string is one complete error line.
#[derive(Debug)]
pub struct ReloadError {
    pub errors: Vec<String>,
    /// Refused by `max_reload_move` (the config itself is valid): `POST /reload` answers 409,
    /// and `?force=true` overrides it.
    pub too_much_moves: bool,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    pub summary: String,
    /// Whether the file was unchanged (nothing was swapped).
    pub unchanged: bool,
    /// One line per changed pool: the shares of sessions the reload moved (DESIGN.md §16).
    pub impact: Vec<String>,
}

/// The outcome of the last reload attempt that read the file (`/status`'s `last_reload`; a
/// watcher pass that found the file unchanged is not one).
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at: std::time::SystemTime,
    /// `SIGHUP`, `admin` or `watch`.
    pub trigger: String,
    pub ok: bool,
    /// The generation serving after it.
    pub generation: u64,
    /// The one-line diff (success).
    pub changes: String,
    /// One line per changed pool: the sessions it moved (success), or would have (refused).
    pub impact: Vec<String>,
    /// Every error (failure).
    pub errors: Vec<String>,
}

/// Applies a new log level directive (see `app::init_logging`).
pub type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub struct Reloader {
    store: Arc<Store>,
    health: Arc<Health>,
    certs: Arc<Certs>,
    path: Option<PathBuf>,
    /// Serializes reloads; also remembers the hash of the last file that failed, so the watcher
    /// reports a bad file once, not every second.
    state: Mutex<Option<String>>,
    /// Applies a new `[log] level` without a restart.
    set_level: Option<SetLevel>,
    last: Mutex<Option<LastReload>>,
    /// The backends found through DNS, merged into every configuration installed (§22).
    discovery: Arc<Discovery>,
}

impl Reloader {
    pub fn new(
        store: Arc<Store>,
        health: Arc<Health>,
        certs: Arc<Certs>,
        path: Option<PathBuf>,
        set_level: Option<SetLevel>,
        discovery: Arc<Discovery>,
    ) -> Reloader {
        Reloader {
            store,
            health,
            certs,
            path,
            state: Mutex::new(None),
            set_level,
            last: Mutex::new(None),
            discovery,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    /// The last reload attempt since start, if any.
    pub fn last(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads from the config file. `force`: reload even if the content hash is unchanged
    /// (SIGHUP and the admin API force; the watcher does not).
    pub fn reload(&self, trigger: &str, force: bool) -> Result<Reloaded, ReloadError> {
        self.reload_with(trigger, force, false)
    }

    /// [`Reloader::reload`]; `allow_moves` skips the `max_reload_move` guard
    /// (`POST /reload?force=true`).
    pub fn reload_with(
        &self,
        trigger: &str,
        force: bool,
        allow_moves: bool,
    ) -> Result<Reloaded, ReloadError> {
        let mut last_failed = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return Err(ReloadError {
                errors: vec![
                    "this instance runs a built-in configuration (demo): nothing to reload".into(),
                ],
                too_much_moves: false,
            });
        };
        let current = self.store.load();
        if !force {
            // Cheap pre-check for the watcher: only hash the bytes.
            if let Ok(bytes) = std::fs::read(path) {
                let hash = config::content_hash(&bytes);
                if hash == current.config.source.hash || last_failed.as_deref() == Some(&*hash) {
                    tracing::debug!(
                        trigger,
                        "configuration file unchanged (content hash {hash}): not reloaded"
                    );
                    return Ok(Reloaded {
                        generation: current.generation,
                        summary: "unchanged".into(),
                        unchanged: true,
                        impact: Vec::new(),
                    });
                }
            }
        }
        notify(&[sd_notify::NotifyState::Reloading]);
        let result = self.try_reload(path, &current.config, allow_moves);
        let m = self.store.metrics();
        let out = match result {
            Ok((new, impact)) => {
                *last_failed = None;
                let level_changed = new.log.level != current.config.log.level;
                let level = new.log.level.clone();
                // Counted before the install makes the new generation visible: a scrape that
                // sees the new generation also sees this reload's success.
                m.reloads.with_label_values(&["success"]).inc();
                m.last_reload_ok.set(1);
                let (snap, diff) = self.store.install(new);
                self.health.sync(&snap);
                discover::publish(m, &snap.config, Some(&current.config));
                self.discovery.installed(&snap.config, allow_moves);
                if level_changed {
                    if let Some(set) = &self.set_level {
                        if let Err(e) = set(&level) {
                            tracing::warn!("log level not changed: {e}");
                        }
                    }
                }
                let summary = diff.to_string();
                tracing::info!(
                    trigger,
                    generation = snap.generation,
                    "configuration reloaded: {summary}"
                );
                // The same lines as `tether check --against` prints, each as the whole message.
                for line in &impact {
                    tracing::info!("{line}");
                }
                Ok(Reloaded {
                    generation: snap.generation,
                    summary,
                    unchanged: false,
                    impact,
                })
            }
            Err((hash, errors, too_much_moves)) => {
                *last_failed = hash;
                m.reloads.with_label_values(&["failure"]).inc();
                m.last_reload_ok.set(0);
                tracing::error!(
                    trigger,
                    "configuration reload failed, still serving generation {}:",
                    current.generation
                );
                for e in &errors {
                    tracing::error!("  {e}");
                }
                Err(ReloadError {
                    errors,
                    too_much_moves,
                })
            }
        };
        notify(&[sd_notify::NotifyState::Ready]);
        let last = match &out {
            Ok(done) => LastReload {
                at: std::time::SystemTime::now(),
                trigger: trigger.into(),
                ok: true,
                generation: done.generation,
                changes: done.summary.clone(),
                impact: done.impact.clone(),
                errors: Vec::new(),
            },
            Err(e) => LastReload {
                at: std::time::SystemTime::now(),
                trigger: trigger.into(),
                ok: false,
                generation: current.generation,
                changes: String::new(),
                impact: Vec::new(),
                errors: e.errors.clone(),
            },
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
        out
    }

    /// The new config and its impact lines, or (content hash, errors, refused for moving too
    /// much).
    #[allow(clippy::type_complexity)]
    fn try_reload(
        &self,
        path: &std::path::Path,
        old: &Config,
        allow_moves: bool,
    ) -> Result<(Config, Vec<String>), (Option<String>, Vec<String>, bool)> {
        let mut new = config::load(path)
            .map_err(|e| (None, e.0.iter().map(|e| e.to_string()).collect(), false))?;
        // The backends found through DNS stay (a forced reload also applies held-back answers).
        self.discovery.merge(&mut new, allow_moves);
        for w in &new.warnings {
            tracing::warn!("configuration: {w}");
        }
        let restart = restart_needed(old, &new);
        if !restart.is_empty() {
            return Err((Some(new.source.hash.clone()), restart, false));
        }
        let impacts = self.impact(old, &new);
        let lines: Vec<String> = impacts.iter().map(ToString::to_string).collect();
        // The guard in force and the one being installed: the stricter of the two applies (a
        // file cannot lift the guard in the same reload that needs it lifted; force can).
        if let Some(max) = crate::balance::impact::guard(old, &new).filter(|_| !allow_moves) {
            let over = crate::balance::impact::over(&impacts, max);
            if !over.is_empty() {
                let mut errors = lines;
                errors.push(format!(
                    "reload refused: {} move{} more than server.max_reload_move = {max} ({:.1}%) of a pool's sessions; POST /reload?force=true to apply it anyway",
                    over.iter().map(|i| i.pool.as_str()).collect::<Vec<_>>().join(", "),
                    if over.len() == 1 { "s" } else { "" },
                    max * 100.0
                ));
                return Err((Some(new.source.hash.clone()), errors, true));
            }
        }
        // Certificates rotate before the snapshot swap; validation already proved they load.
        self.certs
            .reload(&new.server.tls)
            .map_err(|e| (Some(new.source.hash.clone()), vec![e], false))?;
        Ok((new, lines))
    }

    /// What replacing `old` by `new` does to each changed pool's sessions (DESIGN.md §16),
    /// with the backends in maint now taking no part.
    fn impact(&self, old: &Config, new: &Config) -> Vec<crate::balance::impact::PoolImpact> {
        let registry = self.store.registry();
        let in_maint = |pool: &str, id: &str| {
            registry
                .get(pool, id)
                .is_some_and(|s| s.admin() == crate::state::backend::Admin::Maint)
        };
        crate::balance::impact::between(old, new, &in_maint)
    }

    /// Applies one resolution of `pool`'s `[discover]` name (`opts`) like a reload of that pool
    /// (DESIGN.md §22): a failure or an unchanged answer changes nothing; a changed one is
    /// installed — unless it moves more than `max_reload_move` allows, then it is held back
    /// until `POST /reload?force=true` or a different answer. Serialized with file reloads.
    pub fn apply_discovered(
        &self,
        pool: &str,
        opts: &DiscoverOpts,
        outcome: Result<Answer, Failure>,
    ) {
        let _serial = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.store.load();
        let still = current
            .config
            .pools
            .iter()
            .any(|p| p.name == pool && p.discover.as_ref() == Some(opts));
        if !still {
            // Reconfigured meanwhile: the task resolves the new name next.
            return;
        }
        let m = self.store.metrics();
        let count = |result: &str| {
            m.discovery_resolutions
                .with_label_values(&[pool, result])
                .inc();
        };
        let d = &self.discovery;
        let answer = match outcome {
            Ok(a) => a,
            Err(f) => return count(d.failed(pool, &opts.name, f)),
        };
        if d.is_applied(pool, &answer.backends) {
            return count(d.resolved(pool, &opts.name, Applied::Unchanged, answer.backends, None));
        }
        let mut new = (*current.config).clone();
        if let Some(p) = new.pools.iter_mut().find(|p| p.name == pool) {
            discover::put(p, &answer.backends);
        }
        let impacts = self.impact(&current.config, &new);
        let lines: Vec<String> = impacts.iter().map(ToString::to_string).collect();
        if let Some(max) = current.config.server.max_reload_move {
            if !crate::balance::impact::over(&impacts, max).is_empty() {
                if d.held(pool).as_deref() != Some(&answer.backends[..]) {
                    tracing::warn!(
                        pool,
                        "discovery: {}: the new answer ({}) is held back: it moves more than server.max_reload_move = {max} ({:.1}%) of the pool's sessions; POST /reload?force=true applies it",
                        opts.name,
                        discover::ids(&answer.backends),
                        max * 100.0
                    );
                    for line in &lines {
                        tracing::warn!("{line}");
                    }
                }
                let detail = format!(
                    "held back by server.max_reload_move = {max}: {}",
                    lines.join("; ")
                );
                return count(d.resolved(
                    pool,
                    &opts.name,
                    Applied::Held,
                    answer.backends,
                    Some(detail),
                ));
            }
        }
        let (snap, diff) = self.store.install(new);
        self.health.sync(&snap);
        discover::publish(m, &snap.config, Some(&current.config));
        tracing::info!(
            pool,
            generation = snap.generation,
            "discovery: {}: {} backends ({}): {diff}",
            opts.name,
            answer.backends.len(),
            discover::ids(&answer.backends)
        );
        for line in &lines {
            tracing::info!("{line}");
        }
        count(d.resolved(pool, &opts.name, Applied::Changed, answer.backends, None));
    }

    /// Polls the file once a second while `server.watch` is on; reloads when its content hash
    /// changes. Polling (rather than inotify) also sees edits through symlink swaps, as
    /// Kubernetes ConfigMaps and atomic deploys do.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.store.load().config.server.watch {
                continue;
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload("watch", false)).await;
        }
    }
}

/// Differences that need new sockets or runtimes: a reload cannot apply them.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let (o, n) = (&old.server, &new.server);
    if o.listen != n.listen {
        v.push(format!(
            "server.listen changed ({:?} -> {:?}): listeners need a restart or a binary upgrade (tether run --upgrade); reload refused",
            o.listen, n.listen
        ));
    }
    let tls = |s: &config::Server| s.tls.iter().map(|t| t.listen).collect::<Vec<_>>();
    if tls(o) != tls(n) {
        v.push(format!(
            "server.tls listeners changed ({:?} -> {:?}): listeners need a restart or a binary upgrade; reload refused",
            tls(o),
            tls(n)
        ));
    }
    if o.threads != n.threads {
        v.push(format!(
            "server.threads changed ({} -> {}): worker threads need a restart or a binary upgrade; reload refused",
            o.threads, n.threads
        ));
    }
    if o.grace_period != n.grace_period {
        v.push(format!(
            "server.grace_period changed ({:?} -> {:?}): Pingora fixes it at start; needs a restart or a binary upgrade; reload refused",
            o.grace_period, n.grace_period
        ));
    }
    if o.admin != n.admin {
        v.push(format!(
            "server.admin changed ({:?} -> {:?}): the admin listener needs a restart; reload refused",
            o.admin, n.admin
        ));
    }
    if o.pid_file != n.pid_file || o.upgrade_sock != n.upgrade_sock {
        v.push(
            "server.pid_file or server.upgrade_sock changed: needs a restart; reload refused"
                .into(),
        );
    }
    if old.log.format != new.log.format {
        v.push("log.format changed: needs a restart; reload refused".into());
    }
    v
}

/// Tells systemd (when running under it; a no-op otherwise).
pub fn notify(states: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(false, states);
}
