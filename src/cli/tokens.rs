//! `autoprov token …` on a stopped server's data folder: the use cases of `crate::admin::tokens`
//! on the store directly, printed for a terminal.

use crate::admin::AdminError;
use crate::admin::tokens::{create, list, revoke};
use crate::args::TokenCommand;
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Why an `autoprov token …` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server holds the store.
    #[error(
        "the store in {data} is locked: an autoprov server is running on this data folder. \
         Stop it first, or manage tokens through its HTTP API with the admin token: \
         POST /api/v1/tokens {{\"domain\": \"…\"}}, GET /api/v1/tokens, DELETE /api/v1/tokens/{{id}}"
    )]
    Locked {
        /// The data folder.
        data: String,
    },
    /// No store in the data folder (a mistyped `--data` must not create one).
    #[error(
        "no store in {data}: start the server once on it first, or name the right folder with --data"
    )]
    NoStore {
        /// The data folder.
        data: String,
    },
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request was refused (unknown domain, unknown id, …).
    #[error(transparent)]
    Refused(#[from] AdminError),
}

/// Runs `autoprov token …` on `config.data` directly; returns what to print.
pub fn run_cli(config: &Config, cmd: &TokenCommand) -> Result<String, CliError> {
    let path = config.data.join("store");
    if !path.is_dir() {
        return Err(CliError::NoStore {
            data: config.data.display().to_string(),
        });
    }
    let store = match Store::open(&path, config.store_cache_bytes) {
        Ok(s) => s,
        Err(StoreError::Locked { .. }) => {
            return Err(CliError::Locked {
                data: config.data.display().to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let out = match cmd {
        TokenCommand::Create { domain } => {
            let (t, secret) = create(&store, None, domain)?;
            format!(
                "id: {}\ndomain: {}\ncreated: {}\ntoken: {secret}\n\
                 (the token is shown only now; only its hash is stored)\n",
                t.id, t.domain, t.created
            )
        }
        TokenCommand::List => {
            let mut out = String::from("id\tdomain\tcreated\n");
            for t in list(&store, None)? {
                out.push_str(&format!("{}\t{}\t{}\n", t.id, t.domain, t.created));
            }
            out
        }
        TokenCommand::Revoke { id } => {
            let t = revoke(&store, None, id)?;
            format!("revoked {} (domain {})\n", t.id, t.domain)
        }
    };
    store.flush_sync()?;
    Ok(out)
}
