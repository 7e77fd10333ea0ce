//! Process entry: parse argv, install the subscriber, bind, serve until SIGINT/SIGTERM
//! (SIGHUP reloads models and templates),
//! and turn a startup error into a printed cause chain and a non-zero exit.

// No function over 80 lines (clippy.toml): long functions are split, never allowed.
#![warn(clippy::too_many_lines)]

use clap::Parser;

use autoprov::args::{Cli, Command};
use autoprov::config::Config;

/// mimalloc: fewer, smaller arenas than glibc's per-thread ones (lower peak RSS under a
/// storm) and cheaper small allocations on the fetch path (see docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match Config::load(&cli)
        .map_err(anyhow::Error::from)
        .and_then(|config| Ok((runtime(config.workers)?, config)))
        .and_then(|(rt, config)| rt.block_on(run(cli, config)))
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("autoprov: error: {}", chain.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}

/// One worker: the current-thread scheduler (no work-stealing queues, no cross-thread
/// wake-ups; docs/PERFORMANCE.md). More: the multi-thread one with that many workers.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command.clone().unwrap_or(Command::Serve) {
        Command::Serve => {
            let _log_guard = autoprov::telemetry::init(config.log_format);
            serve(config).await
        }
        // Admin subcommands log only when asked to (RUST_LOG): their stderr is for people.
        cmd => {
            let _log_guard =
                std::env::var_os("RUST_LOG").map(|_| autoprov::telemetry::init(config.log_format));
            autoprov::cli::run(&cli, &config, cmd).await
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // The certificate and key are checked before anything is opened or created.
    let acceptor = match &config.tls {
        Some(t) => Some(autoprov::tls::acceptor(t)?),
        None => None,
    };
    let (state, startup) = autoprov::init(&config)?;
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let mut listeners = autoprov::Listeners::default();
    let mut urls = Vec::new();
    if config.listen_http {
        let l = bind(config.listen).await?;
        urls.push(format!("http://{}", l.local_addr()?));
        listeners.http = Some(l);
    }
    if let (Some(t), Some(acceptor)) = (&config.tls, acceptor) {
        let l = bind(t.listen).await?;
        urls.push(format!("https://{}", l.local_addr()?));
        listeners.https = Some((l, acceptor));
    }
    let addr = urls.join(" and ");
    // Installed before the address is printed, so a signal sent after it is never lost.
    #[cfg(unix)]
    reload_on_hangup(state.clone())?;
    let stop = shutdown_signal()?;
    println!(
        "autoprov listening on {addr} ({} models loaded, data in {})",
        startup.models,
        config.data.display()
    );
    match &startup.new_admin_token {
        Some(t) => println!(
            "admin token (shown once, also in {}): {t}",
            startup.admin_token_path.display()
        ),
        None => println!("admin token: see {}", startup.admin_token_path.display()),
    }
    match &startup.new_provisioning_credentials {
        Some((u, p)) => println!(
            "server-default provisioning credentials (also in {}): {u}:{p}",
            startup.provisioning_credentials_path.display()
        ),
        None => println!(
            "server-default provisioning credentials: see {}",
            startup.provisioning_credentials_path.display()
        ),
    }
    tracing::info!(%addr, "listening");
    autoprov::serve_listeners(listeners, state, stop).await?;
    tracing::info!("stopped; store flushed");
    Ok(())
}

/// SIGHUP reloads the models and templates (see `autoprov::reload`): on a blocking thread,
/// one at a time; the outcome (changed models or the error with file and line) is logged.
#[cfg(unix)]
fn reload_on_hangup(state: autoprov::AppState) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let s = state.clone();
            // The outcome is logged by `reload`; a failure keeps the old set.
            let _ = tokio::task::spawn_blocking(move || s.reload("SIGHUP")).await;
        }
    });
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C) stops the server gracefully. The handlers are installed when
/// this is called, before the address is printed: a signal sent right after it is never
/// lost (tokio installs `ctrl_c` only when first polled, which let a SIGTERM kill the
/// process unflushed).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| anyhow::anyhow!("cannot install the {name} handler: {e}"))
        };
        let mut term = install(SignalKind::terminate(), "SIGTERM")?;
        let mut int = install(SignalKind::interrupt(), "SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
