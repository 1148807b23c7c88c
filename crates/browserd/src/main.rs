//! The `browserd` binary: parse the command line, set up logging, call the library.

use anyhow::Context;
use browserd::cli::{Cli, Command};
use browserd::config::{Common, Config, LogFormat, Settings};
use clap::Parser;
use std::os::unix::fs::PermissionsExt;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Everything browserd writes (database, keys, logs, uploads) is its own: 0600 / 0700.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    init_logging(browserd::config::log_format(&cli.common));
    let result = match cli.command {
        Command::Serve(settings) => serve(&cli.common, &settings).await,
        Command::Doctor(settings) => doctor(&cli.common, &settings).await,
        Command::Project(cmd) => browserd::cli::run_project(&cli.common, cmd).await,
        Command::Keys(cmd) => browserd::cli::run_keys(&cli.common, cmd).await,
        Command::Sessions(cmd) => browserd::cli::run_sessions(&cli.common, cmd).await,
        Command::Drain => browserd::cli::run_drain(&cli.common).await,
        Command::Nodes(cmd) => browserd::cli::run_nodes(&cli.common, cmd).await,
        Command::Backup { file } => browserd::cli::run_backup(&cli.common, &file).await,
        Command::Restore { file } => browserd::cli::run_restore(&cli.common, &file),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("browserd: {}", browserd::cli::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `browserd doctor`: one line per check; an error if one failed.
async fn doctor(common: &Common, settings: &Settings) -> anyhow::Result<()> {
    let config = Config::resolve(common, settings)?;
    let checks = browserd::doctor::run(&config).await;
    for check in &checks {
        println!("{check}");
    }
    if browserd::doctor::failed(&checks) {
        anyhow::bail!("a check failed: see FAIL above");
    }
    println!("browserd can run here");
    Ok(())
}

/// Logs go to stderr, filtered by `RUST_LOG` (default: info, sqlx warnings only).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a file or a journal.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        // One object a line; the request's and session's ids come with their spans.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

async fn serve(common: &Common, settings: &Settings) -> anyhow::Result<()> {
    let mut config = Config::resolve(common, settings)?;
    if std::env::args().any(|a| a == "--api-key" || a.starts_with("--api-key=")) {
        tracing::warn!(
            "--api-key on the command line shows the key to every local user (ps); use --api-key-file or BROWSERD_API_KEY"
        );
    }
    browserd::http_server::raise_descriptor_limit();
    // Bound first: with port 0 the address other nodes reach this one on is known only now.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.listen))?;
    let mut addr = listener.local_addr()?;
    config.node_url = Some(config.node_url_of(addr));
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let prepared = browserd::server::prepare(&config).await?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("could not listen on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };

    let socket = config.admin_socket();
    let _ = std::fs::remove_file(&socket); // a stale socket of a previous run; we hold the lock
    let admin = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("could not create admin socket {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;

    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    if prepared.resumed > 0 {
        println!(
            "browserd: resumed {} keepAlive session(s) whose browsers outlived the previous run",
            prepared.resumed
        );
    }
    if prepared.reconciled > 0 {
        println!(
            "browserd: ended {} session(s) a previous run left unfinished",
            prepared.reconciled
        );
    }
    if let Some(key) = &prepared.new_api_key {
        println!(
            "browserd: created the default project {} and its API key.\n\
             The key is shown only this once (browserd stores its hash); set these for the Browserbase SDKs:\n\n\
             BROWSERBASE_BASE_URL={base_url}\n\
             BROWSERBASE_API_KEY={key}\n",
            prepared.default_project_id
        );
    }
    println!(
        "browserd: listening on {base_url} (data dir {}, up to {} sessions)",
        config.data_dir.display(),
        config.max_sessions
    );
    let plan = prepared.shutdown;
    browserd::server::run(
        listener,
        Some(admin),
        metrics,
        prepared.state,
        plan,
        stop_signals(),
    )
    .await?;
    let _ = std::fs::remove_file(&socket);
    println!("browserd: stopped");
    Ok(())
}

/// The number of Ctrl-Cs and SIGTERMs received so far (a second one during a drain stops
/// browserd at once).
fn stop_signals() -> tokio::sync::watch::Receiver<u64> {
    let (count, signals) = tokio::sync::watch::channel(0);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    // Lives as long as the process: every signal is counted, none kills browserd outright.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            count.send_modify(|n| *n += 1);
        }
    });
    signals
}
