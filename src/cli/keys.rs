//! `forewarn keys`: make, list and revoke API keys (`/api/v1` access control). A key is
//! printed once, when it is made; only its hash is stored.

use anyhow::{Context, bail};
use clap::Subcommand;
use forewarn::api::auth::{Role, new_key};
use forewarn::app;
use forewarn::config::Config;
use forewarn::store::NewApiKey;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it (once: it cannot be shown again).
    Create {
        /// admin, dispatcher, technician or integration.
        #[arg(long)]
        role: String,
        /// What the key is for, shown in lists and in the audit (`api:<name>`).
        #[arg(long)]
        name: Option<String>,
        /// A technician key's technician (their external id): the key sees only their jobs.
        #[arg(long)]
        technician: Option<String>,
    },
    /// Every key (never the keys themselves): id, name, role, prefix, created, last used,
    /// revoked.
    List {
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id: it stops working at once.
    Revoke { id: i64 },
}

pub async fn run(command: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let (url, _cluster) = app::resolve_database(config).await?;
    let store = app::open_store(config, &url).await?;
    match command {
        KeysCommand::Create {
            role,
            name,
            technician,
        } => {
            let Some(parsed) = Role::parse(&role) else {
                bail!(
                    "--role {role:?} is not a role: admin, dispatcher, technician or integration"
                );
            };
            let technician_id = match (parsed, technician) {
                (Role::Technician, Some(external_id)) => Some(
                    store
                        .technician_id(&external_id)
                        .await?
                        .with_context(|| format!("no technician {external_id:?}"))?,
                ),
                (Role::Technician, None) => {
                    bail!("a technician key needs --technician <their external id>")
                }
                (_, Some(_)) => bail!("--technician is only for --role technician"),
                (_, None) => None,
            };
            let name = name.unwrap_or_else(|| role.clone());
            if name.trim().is_empty() || name.chars().count() > 100 {
                bail!("--name must be 1-100 characters");
            }
            let key = new_key().context("no random bytes for the key")?;
            let row = store
                .create_api_key(&NewApiKey {
                    name: name.trim(),
                    role: parsed.as_str(),
                    technician_id,
                    prefix: &key.prefix,
                    hash: &key.hash,
                    created_by: "forewarn keys create",
                })
                .await?;
            eprintln!(
                "key {} ({}, role {}) made; it is shown once, keep it now:",
                row.id, row.name, row.role
            );
            println!("{}", key.key);
        }
        KeysCommand::List { json } => {
            let keys = store.api_keys().await?;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                for key in keys {
                    println!(
                        "{:>5}  {:<24} {:<12} {}…  created {}  used {}{}",
                        key.id,
                        key.name,
                        key.role,
                        key.prefix,
                        key.created_at.format("%Y-%m-%d %H:%M"),
                        key.last_used_at.map_or("never".to_string(), |t| t
                            .format("%Y-%m-%d %H:%M")
                            .to_string()),
                        key.revoked_at.map_or(String::new(), |t| format!(
                            "  REVOKED {}",
                            t.format("%Y-%m-%d %H:%M")
                        )),
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_api_key(id).await? {
                println!("key {id} revoked");
            } else {
                bail!("no live key {id}");
            }
        }
    }
    Ok(())
}
