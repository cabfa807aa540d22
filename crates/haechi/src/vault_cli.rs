//! `haechi vault ...`: the vault's administration through the server's `/api/v1/vault` routes
//! (needs `vault.settings`, i.e. System Admin), with the saved session of `haechi login`.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::client::{read_password, Client};

#[derive(Subcommand)]
pub enum VaultCmd {
    /// Show the mode, whether this server holds the master key, the keys and counts.
    Status,
    /// Apply the master key to unseal the vault (Manual mode, after each server start).
    Unseal {
        /// Read the key from standard input (one line) instead of prompting.
        #[arg(long)]
        key_stdin: bool,
    },
    /// Re-encrypt every value under a new data key (one transaction) and retire the old keys.
    RotateDataKey,
    /// Change the master key: data keys are re-wrapped, values untouched. A new key is generated
    /// and printed once unless one is given.
    ChangeMasterKey {
        /// Read the current key from standard input (first line), and with --new-key-stdin the
        /// new key from the second line, instead of prompting.
        #[arg(long)]
        key_stdin: bool,
        /// Take the new key from standard input (second line) instead of generating one.
        #[arg(long, requires = "key_stdin")]
        new_key_stdin: bool,
    },
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn vault(cmd: VaultCmd) -> anyhow::Result<ExitCode> {
    let c = Client::from_session()?;
    let out = match cmd {
        VaultCmd::Status => c.call(Method::GET, "/api/v1/vault/status", None).await?,
        VaultCmd::Unseal { key_stdin } => {
            let key = read_password("vault master key: ", key_stdin)?;
            c.call(
                Method::POST,
                "/api/v1/vault/unseal",
                Some(&json!({ "key": key })),
            )
            .await?
        }
        VaultCmd::RotateDataKey => {
            c.call(Method::POST, "/api/v1/vault/rotate-data-key", None)
                .await?
        }
        VaultCmd::ChangeMasterKey {
            key_stdin,
            new_key_stdin,
        } => {
            let current = read_password("current vault master key: ", key_stdin)?;
            let (new, generated) = if new_key_stdin {
                (read_password("new vault master key: ", true)?, false)
            } else {
                (
                    haechi_vault::crypto::MasterKey::generate()
                        .to_base64()
                        .expose_secret()
                        .to_owned(),
                    true,
                )
            };
            let answer = c
                .call(
                    Method::POST,
                    "/api/v1/vault/change-master-key",
                    Some(&json!({ "current_key": current, "new_key": new })),
                )
                .await;
            match answer {
                Ok(v) => {
                    if generated {
                        println!("new vault master key (shown once; keep it safe): {new}");
                    }
                    v
                }
                Err(e) => {
                    if generated {
                        eprintln!(
                            "the change failed; if the server applied it before the failure, the new key is: {new}"
                        );
                    }
                    return Err(e);
                }
            }
        }
    };
    print_json(&out);
    Ok(ExitCode::SUCCESS)
}
