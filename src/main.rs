//! quorum: a clustered, highly available engine for iii workers.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use quorum::config::{Config, LogFormat, ServeArgs};
use quorum::{auth, cluster, managed, node};

/// quorum: point unmodified iii SDKs at it; lose a node without losing service.
#[derive(Parser, Debug)]
#[command(name = "quorum", version, about)]
struct Cli {
    #[command(subcommand)]
    command: CommandLine,
}

/// Parsed once at start-up, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum CommandLine {
    /// Run a node (with no peers, a cluster of one with its data in ./data).
    Serve(ServeArgs),
    /// Inspect or change a running cluster through any member.
    #[command(subcommand)]
    Cluster(cluster::cli::ClusterCommand),
    /// Make the CA, node and operator certificates the cluster port runs on.
    #[command(subcommand)]
    Cert(auth::certs::CertCommand),
    /// Make, list and revoke the tokens workers present on the worker port.
    #[command(subcommand)]
    Token(auth::token_cli::TokenCommand),
    /// Run workers on the cluster from their iii.worker.yaml, kept running on a live node.
    #[command(subcommand)]
    Worker(managed::cli::WorkerCommand),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("QUORUM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Caps glibc's malloc arenas at one per runtime thread plus one, unless the operator chose
/// with `MALLOC_ARENA_MAX` (glibc reads it itself). glibc's default is 8 per CPU: threads of the
/// blocking pool (sled, snapshots, large frames) each got an arena of their own, and each kept
/// what it had freed, so a node under worker churn grew by steps (119 MiB after 7 minutes
/// instead of a level 81 MiB, see docs/benchmarks.md). Must run before any thread starts.
fn cap_malloc_arenas(runtime_threads: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let arenas = libc::c_int::try_from(runtime_threads + 1).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = runtime_threads;
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CommandLine::Cluster(command) => cluster::cli::run(command),
        CommandLine::Cert(command) => auth::certs::run(command),
        CommandLine::Token(command) => auth::token_cli::run(command),
        CommandLine::Worker(command) => managed::cli::run(command),
        CommandLine::Serve(args) => {
            let config = match Config::load(&args) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("quorum: {err}");
                    return std::process::ExitCode::from(2);
                }
            };
            cap_malloc_arenas(config.runtime_threads);
            init_logging(config.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.runtime_threads)
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("quorum: cannot start the async runtime: {err}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(node::run(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "node stopped");
                    eprintln!("quorum: {err:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
