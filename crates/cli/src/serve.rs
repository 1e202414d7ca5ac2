//! `tenantd serve`: load the config, start the server, print a generated
//! bootstrap key once, and serve until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use tenantd_core::SystemClock;
use tenantd_server::config::{Config, Overrides};
use tenantd_server::{telemetry, Server};
use tokio::net::TcpListener;

use crate::args::{RecoverArgs, ServeArgs};

/// BSD's EX_USAGE, the exit status for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 64;

pub async fn run(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        log_format: args.log_format.map(Into::into),
        log_level: args.log_level,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tenantd: bad configuration: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    telemetry::init(&config);
    let listen = config.listen;
    // Bound before the server starts: a first start that could not listen
    // would otherwise create the first operator key, store only its hash,
    // and exit without ever printing it.
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, address = %listen, "could not listen");
            return ExitCode::FAILURE;
        }
    };
    let mut server = match Server::start(config, Arc::new(SystemClock)).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(token) = server.take_bootstrap_token() {
        // Printed on stdout, never through the logger, so that it does not
        // end up in log storage.
        println!("Created the first operator key. It is shown only this once:\n\n    {token}\n");
    }
    match server.run(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// `tenantd recover-operator-key`: a new operator key on a stopped
/// server's data directory, printed once.
pub async fn recover(args: RecoverArgs) -> ExitCode {
    let overrides = Overrides {
        data_dir: args.data_dir,
        ..Overrides::default()
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tenantd: bad configuration: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match tenantd_server::recover_operator_key(&config, &SystemClock).await {
        Ok((id, token)) => {
            println!("Created operator key {id}. It is shown only this once:\n\n    {token}\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tenantd: could not create an operator key: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
