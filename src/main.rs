//! The `tether` binary: CLI parsing and exit codes only (DESIGN.md §2); everything else is in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Measured ≈0.87x the CPU per request of glibc malloc under Pingora (DESIGN.md §10).
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A measurement build's allocator (feature `alloc-count`, `benches/allocs.sh`): mimalloc, plus
/// one relaxed increment of `tether::state::allocs::ALLOCATIONS` per allocation.
#[cfg(feature = "alloc-count")]
struct Counting;

#[cfg(feature = "alloc-count")]
// SAFETY: every call is forwarded unchanged to mimalloc, which upholds GlobalAlloc's contract.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { std::alloc::GlobalAlloc::alloc(&mimalloc::MiMalloc, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { std::alloc::GlobalAlloc::alloc_zeroed(&mimalloc::MiMalloc, layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::GlobalAlloc::dealloc(&mimalloc::MiMalloc, ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { std::alloc::GlobalAlloc::realloc(&mimalloc::MiMalloc, ptr, layout, new) }
    }
}

#[cfg(feature = "alloc-count")]
fn count() {
    tether::state::allocs::ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(feature = "alloc-count")]
#[global_allocator]
static GLOBAL: Counting = Counting;

const DEFAULT_CONFIG: &str = "/etc/tether/tether.toml";

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Layer-7 load-balancing HTTP proxy with signed session affinity"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file [env: TETHER_CONFIG] [default: /etc/tether/tether.toml]
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Take over the listeners of the running instance (zero-downtime binary upgrade); send
    /// SIGQUIT to the old process once this one is started.
    #[arg(long)]
    upgrade: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground.
    Run(RunArgs),
    /// Validate a configuration without binding anything; exit 1 listing every error.
    Check {
        #[arg(short, long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Also preview a reload from this (running) configuration: the diff, and per changed
        /// pool the share of hash keys and cookie sessions that would move.
        #[arg(long, value_name = "OLD")]
        against: Option<PathBuf>,
    },
    /// Start built-in demo backends on loopback and the proxy in front of them.
    Demo,
}

/// `tether package-assets --out DIR`: writes the man pages and the bash, zsh and fish
/// completions of [`Cli`] into DIR, for the Debian package (`.ci/package`). Parsed apart from
/// [`Cli`], before it, so that the pages and completions it writes do not offer it (clap's
/// generators list even hidden subcommands).
#[derive(Parser)]
#[command(name = "tether package-assets")]
struct PackageAssets {
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn config_path(p: Option<PathBuf>) -> PathBuf {
    p.or_else(|| std::env::var_os("TETHER_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

fn main() -> ExitCode {
    // First thing: SIGHUP's default action would kill the process (Pingora does not trap it).
    let sighup = tether::app::trap_sighup();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "package-assets")
    {
        let args = PackageAssets::parse_from(std::env::args_os().skip(1));
        return match package_assets(&args.out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tether package-assets: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { config, against }) => return check(config_path(config), against),
        Some(Command::Demo) => tether::demo::demo(sighup),
        Some(Command::Run(args)) => run(args, sighup),
        None => run(cli.run, sighup),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `DIR/man/tether.1` (and one page per subcommand) and `DIR/completions/{tether.bash,_tether,
/// tether.fish}`, from the very definition `main` parses with. Not in a build script: the CLI
/// lives in this binary, and generating from the binary that ships keeps the two the same.
fn package_assets(out: &std::path::Path) -> Result<(), String> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man).map_err(|e| format!("man pages: {e}"))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "tether", &completions)
            .map_err(|e| format!("{shell} completion: {e}"))?;
    }
    Ok(())
}

fn check(path: PathBuf, against: Option<PathBuf>) -> ExitCode {
    let Some(c) = load_or_report(&path) else {
        return ExitCode::FAILURE;
    };
    let backends: usize = c.pools.iter().map(|p| p.backends.len()).sum();
    println!(
        "{}: configuration ok: {} pools, {} backends, {} routes",
        path.display(),
        c.pools.len(),
        backends,
        c.routes.len()
    );
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
    for (warning, line) in tether::control::discover::check(&c) {
        if warning {
            eprintln!("warning: {line}");
        } else {
            println!("{line}");
        }
    }
    if let Ok(e) = std::env::var("TETHER_ENGINE") {
        eprintln!(
            "warning: TETHER_ENGINE={e:?}: {}",
            tether::config::ENGINE_DEPRECATED
        );
    }
    if let Some(old_path) = against {
        let Some(old) = load_or_report(&old_path) else {
            return ExitCode::FAILURE;
        };
        for line in tether::balance::impact::preview(&old, &c) {
            println!("{line}");
        }
    }
    ExitCode::SUCCESS
}

fn load_or_report(path: &std::path::Path) -> Option<tether::config::Config> {
    match tether::config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} error{}",
                path.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}

fn run(args: RunArgs, sighup: Option<signal_hook::iterator::Signals>) -> Result<(), String> {
    let path = config_path(args.config);
    let config = tether::config::load(&path).map_err(|errors| {
        let mut s = format!("{}: invalid configuration:", path.display());
        for e in &errors.0 {
            s.push_str("\n  ");
            s.push_str(&e.to_string());
        }
        s
    })?;
    tether::app::run(
        tether::app::RunOpts {
            config,
            path: Some(path),
            upgrade: args.upgrade,
            sighup,
        },
        |_| {},
    )
}
