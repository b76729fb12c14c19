//! The `forewarn` binary: parses the command line and configuration, then hands over to the
//! command's module in `cli`, which calls the library and prints. `anyhow` lives only at
//! this edge.

mod cli;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use forewarn::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let config =
        Config::load(cli.config.as_deref(), std::env::vars()).context("loading configuration")?;
    forewarn::observability::init_tracing(&config.log, std::env::var("RUST_LOG").ok().as_deref());
    config.warn_ignored_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(cli::run(cli.command, config));
    // Blocking tasks (training, feature computation) must not keep a stopping process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}
