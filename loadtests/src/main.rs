//! `kurz-load`: see the crate README for flags and examples.

use anyhow::Context;
use clap::Parser;
use kurz_loadtests::api_key::API_KEY_ENV;
use kurz_loadtests::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    cli.api_key_from_env(std::env::var_os(API_KEY_ENV).as_deref())?;
    let threads = match &cli.command {
        Some(Command::Seed(seed)) => seed.threads,
        None => cli.run.threads,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads as usize);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Some(Command::Seed(args)) => runtime.block_on(kurz_loadtests::run_seed(args)).map(drop),
        None => runtime
            .block_on(kurz_loadtests::run_and_report(cli.run))
            .map(drop),
    }
}
