//! What the simulator's integration tests share: a migrated scratch database.

use forewarn::embedded::postgres::{ClusterOptions, PrivateCluster};
use forewarn::store::Store;

/// A fresh database named after `name` and this process: on `DATABASE_URL`'s server, else
/// on a private cluster. Returns the store and the database's URL.
pub async fn test_store_named(name: &str) -> (Store, String) {
    let admin_url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => tokio::task::spawn_blocking(|| {
            let options = ClusterOptions {
                data_dir: std::env::temp_dir().join("forewarn-test-pg"),
                port: None,
                durable: false,
            };
            PrivateCluster::start(&options)
                .expect("private PostgreSQL")
                .url("postgres")
        })
        .await
        .unwrap(),
    };
    let name = format!("fw_sim_{name}_{}", std::process::id());
    forewarn::store::drop_database(&admin_url, &name)
        .await
        .unwrap();
    forewarn::store::create_database(&admin_url, &name)
        .await
        .unwrap();
    let url = forewarn::store::url_with_database(&admin_url, &name).unwrap();
    let config = forewarn::config::Config::default();
    let mut store = Store::connect(&url, &config.database, &config.storage)
        .await
        .unwrap();
    store.migrate(&config.storage).await.unwrap();
    (store, url)
}

/// The live test's database.
#[allow(dead_code)]
pub async fn test_store() -> (Store, String) {
    test_store_named("live").await
}
