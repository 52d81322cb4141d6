//! Process assembly: logging, the snapshot store, the control runtime (health checks, reload
//! triggers), and the Pingora server with the proxy and admin services.
//!
//! Owns: startup and shutdown order. Must not touch: request handling or config parsing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{
    RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch,
};
use pingora::services::listening::Service;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::{reload, EnvFilter};

use crate::config::{Config, LogFormat};
use crate::control::admin::AdminApp;
use crate::control::health::Health;
use crate::control::reload::{notify, Reloader, SetLevel};
use crate::engine::fast::Fast;
use crate::snapshot::Store;
use crate::state::backend::Registry;
use crate::state::metrics::Metrics;

/// How to run.
pub struct RunOpts {
    pub config: Config,
    /// The file to reload from (`None` for the built-in demo config).
    pub path: Option<PathBuf>,
    /// Take the listeners of a running instance (Pingora graceful upgrade).
    pub upgrade: bool,
    /// SIGHUP deliveries, registered first thing in `main`.
    pub sighup: Option<signal_hook::iterator::Signals>,
}

/// Installs the SIGHUP handler. Call first thing in `main`: Pingora does not trap SIGHUP and
/// its default action would kill the process.
pub fn trap_sighup() -> Option<signal_hook::iterator::Signals> {
    signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]).ok()
}

/// Initialises tracing (text or JSON) and bridges Pingora's `log` output into it. `RUST_LOG`,
/// when set, overrides `[log] level`. Returns a setter for the level (used by reload).
pub fn init_logging(format: LogFormat, level: &str) -> Option<SetLevel> {
    let env = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(env.as_deref().unwrap_or(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // The log's filter applies to the log only: `h2`'s oversize events reach the layer that
    // counts them whatever the level (DESIGN.md §20).
    let registry = tracing_subscriber::registry()
        .with(crate::engine::h2::Oversize.with_filter(crate::engine::h2::Oversize::targets()));
    let done = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if done.is_err() {
        return None;
    }
    if env.is_some() {
        return None; // RUST_LOG wins over the config file, also across reloads.
    }
    Some(Box::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

/// Sends STOPPING=1 to systemd before Pingora's own shutdown handling (and logs the signal).
struct NotifyingShutdown;

#[async_trait]
impl ShutdownSignalWatch for NotifyingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let s = UnixShutdownSignalWatch.recv().await;
        // Not on SIGQUIT: during a graceful upgrade the service goes on in the new process, and
        // STOPPING=1 would make systemd stop the whole unit (new process included).
        if !matches!(s, ShutdownSignal::GracefulUpgrade) {
            notify(&[sd_notify::NotifyState::Stopping]);
        }
        tracing::info!(
            "shutting down ({})",
            match s {
                ShutdownSignal::GracefulUpgrade => "graceful upgrade: handing listeners over",
                ShutdownSignal::GracefulTerminate => "graceful",
                ShutdownSignal::FastShutdown => "fast",
            }
        );
        s
    }
}

/// Exits once no request has been in progress for two consecutive polls, or lets Pingora finish
/// when the grace period runs out first (Pingora itself always sleeps the whole grace period).
/// Started when Pingora has told its listeners to stop accepting: at once on SIGTERM, and on
/// SIGQUIT only after the hand-over's close timeout, during which this process still accepts
/// connections next to the new one — ending earlier would cut those off. A connection that has
/// been accepted but has not sent its first request yet counts as a request in progress
/// (`exchange::ACTIVE_REQUESTS`).
fn exit_when_idle(grace: Duration, pid_file: PathBuf, settle: Duration) {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let deadline = Instant::now() + grace;
    let mut idle_polls = 0;
    // Give Pingora a moment to broadcast the shutdown and close (or hand over) its listeners.
    std::thread::sleep(settle);
    while Instant::now() < deadline {
        if crate::path::exchange::ACTIVE_REQUESTS.load(Ordering::Relaxed) == 0 {
            idle_polls += 1;
            if idle_polls >= 2 {
                tracing::info!("no request in progress: exiting");
                remove_pid_file(&pid_file);
                std::process::exit(0);
            }
        } else {
            idle_polls = 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails fast, with the address, when a listener cannot be bound (Pingora would log the error
/// and run on without that listener). Skipped for `--upgrade`, whose addresses are held by the
/// old process until it hands them over.
fn check_bindable(config: &Config) -> Result<(), String> {
    let s = &config.server;
    let addrs = s
        .listen
        .iter()
        .copied()
        .chain(s.tls.iter().map(|t| t.listen))
        .chain(s.admin);
    for addr in addrs {
        if addr.port() == 0 {
            continue;
        }
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}

/// Runs tether until shutdown. `extra` adds services to the same server (the demo backends).
pub fn run(opts: RunOpts, extra: impl FnOnce(&mut Server)) -> Result<(), String> {
    let RunOpts {
        config,
        path,
        upgrade,
        sighup,
    } = opts;
    let set_level = init_logging(config.log.format, &config.log.level);
    for w in &config.warnings {
        tracing::warn!("configuration: {w}");
    }
    if !upgrade {
        check_bindable(&config)?;
    }
    let metrics = Arc::new(Metrics::new());
    crate::engine::h2::Oversize::count_into(
        metrics.rejected[crate::path::read::Reject::HeaderTooLarge.index()].clone(),
    );
    let registry = Arc::new(Registry::new(metrics));
    let server_cfg = config.server.clone();
    let certs = Arc::new(crate::state::tls::Certs::new(&server_cfg.tls)?);
    // The control runtime: health checks, the file watcher, readiness notification and the
    // Redis connection of rate limits. Separate from Pingora's worker runtimes so a slow check
    // never competes with requests for a worker. Made before the first snapshot, whose Redis
    // store connects on it.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tether-control")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    crate::state::ratelimit::redis::set_runtime(control.handle());
    // Backends found through DNS (§22) are in the first snapshot: resolved before it is built.
    let mut config = config;
    let discovery = Arc::new(crate::control::discover::Discovery::new());
    crate::control::discover::initial(
        &discovery,
        &mut config,
        registry.metrics(),
        control.handle(),
    );
    let store = Arc::new(Store::new(config, registry));
    let health = Arc::new(Health::new(store.clone(), control.handle().clone()));
    health.sync(&store.load());
    store.start_refresher(control.handle());
    // `jwks_url` key sets: the first fetch before any request is served, then the loop.
    crate::control::keys::fetch_all(&store);
    crate::control::keys::start(&store, control.handle());
    let reloader = Arc::new(Reloader::new(
        store.clone(),
        health.clone(),
        certs.clone(),
        path,
        set_level,
        discovery,
    ));
    control.spawn(reloader.clone().watch());
    crate::control::discover::tasks::start(reloader.clone(), control.handle());
    // Requests per second and 5xx share over 10 s for /status and the status page.
    control.spawn(crate::control::traffic::run(store.clone()));
    if let Some(mut signals) = sighup {
        let r = reloader.clone();
        std::thread::Builder::new()
            .name("tether-sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let _ = r.reload("SIGHUP", true);
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }

    let conf = ServerConf {
        threads: server_cfg.threads.get(),
        // Measured 0.84x the CPU per request of the default (DESIGN.md §10).
        work_stealing: false,
        pid_file: server_cfg.pid_file.display().to_string(),
        upgrade_sock: server_cfg.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(server_cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let ids = Arc::new(crate::path::route::RequestIds::new());
    if let Ok(e) = std::env::var("TETHER_ENGINE") {
        tracing::warn!("TETHER_ENGINE={e:?}: {}", crate::config::ENGINE_DEPRECATED);
    }
    let mut tls_settings = Vec::new();
    for l in &server_cfg.tls {
        // Certificates were read and checked during validation; the resolver serves them
        // (TlsSettings::build() would panic on unreadable files: never given any).
        let resolver = certs
            .resolver(l.listen)
            .ok_or_else(|| format!("no certificates for TLS listener {}", l.listen))?;
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| format!("TLS listener {}: {e}", l.listen))?;
        settings.set_cert_resolver(resolver);
        settings.enable_h2();
        tls_settings.push((l.listen, settings));
    }
    // Plain listeners are accepted by tether itself: a connection is one small task (pingora's
    // listening service gives each a task sized for a TLS handshake, and that was most of an
    // idle connection's memory). Listening fds are still in pingora's table, so a graceful
    // upgrade hands them over as before.
    if !server_cfg.listen.is_empty() {
        server.add_service(crate::engine::listen::Plain::new(
            server_cfg.listen.iter().map(|a| a.to_string()).collect(),
            Fast::new(store.clone(), ids.clone()),
            server.configuration.threads,
        ));
    }
    if !tls_settings.is_empty() {
        let mut svc = Service::new(
            "tether proxy".to_string(),
            Fast::new(store.clone(), ids.clone()),
        );
        // No L4 buffers: the codec reads into pooled buffers and writes whole heads (and
        // flushes), so an idle keep-alive connection holds neither pingora's 64 KiB read buffer
        // nor its write buffer (DESIGN.md §19).
        let buffers = L4BufferSettings::new(0, 0);
        for (addr, settings) in tls_settings {
            svc.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(settings)
                    .l4_buffer(buffers),
            );
        }
        server.add_service(svc);
    }
    tracing::debug!(engine = "fast", "HTTP/1.1 engine");
    if let Some(addr) = server_cfg.admin {
        let mut admin = Service::new(
            "tether admin".to_string(),
            AdminApp::new(store.clone(), reloader.clone()),
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }
    extra(&mut server);

    let mut phases = server.watch_execution_phase();
    let (pid_file, grace) = (server_cfg.pid_file.clone(), server_cfg.grace_period);
    control.spawn(async move {
        use pingora::server::ExecutionPhase;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let phase = match phases.recv().await {
                Ok(p) => p,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            };
            if matches!(phase, ExecutionPhase::ShutdownStarted) {
                // The listeners were just told to stop accepting; give them a moment to.
                let (grace, pid_file) = (grace, pid_file.clone());
                std::thread::spawn(move || {
                    exit_when_idle(grace, pid_file, Duration::from_millis(100))
                });
            }
            if matches!(phase, ExecutionPhase::Running) {
                // Pingora writes its pid file only when it daemonizes; systemd's PIDFile= (how
                // it adopts the new process of a graceful upgrade) needs it in the foreground.
                if let Err(e) = write_pid_file(&pid_file) {
                    tracing::warn!("cannot write pid file {}: {e}", pid_file.display());
                }
                notify(&[sd_notify::NotifyState::Ready]);
                tracing::info!("tether {} ready", env!("CARGO_PKG_VERSION"));
            }
        }
    });

    server.run(RunArgs {
        shutdown_signal: Box::new(NotifyingShutdown),
    });
    health.stop();
    control.shutdown_background();
    remove_pid_file(&server_cfg.pid_file);
    Ok(())
}

/// Writes our pid atomically (temp file + rename), once the listeners are held.
fn write_pid_file(path: &std::path::Path) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("pid.{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// Removes the pid file only while it still names this process: after a graceful upgrade it
/// names the new one.
fn remove_pid_file(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}
