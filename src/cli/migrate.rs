//! `forewarn migrate`: apply the migrations and TimescaleDB policies, then exit.

use forewarn::app;
use forewarn::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let (url, _cluster) = app::resolve_database(config).await?;
    let store = app::open_store(config, &url).await?;
    println!("migrated (timescaledb: {})", store.is_timescaledb());
    Ok(())
}
