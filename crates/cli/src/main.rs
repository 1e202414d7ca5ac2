//! The `tenantd` binary: parses arguments and hands over to the library.
#![forbid(unsafe_code)]
// A command-line tool talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's allocator: glibc's malloc and free were a
/// sixth of the server's CPU per proxied request (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod client;
mod output;
mod serve;
mod tenancy;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match cli.command {
        args::Command::Serve(serve) => serve::run(serve).await,
        args::Command::RecoverOperatorKey(recover) => serve::recover(recover).await,
        args::Command::Client(command) => client::run(cli.client, command).await,
    }
}
