//! The command line: the flags and subcommands clap parses (each flag also an `AUTOPROV_*`
//! variable). Only definitions: `config` resolves the server's settings from them, `cli`
//! runs the admin subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command line (each flag is also an `AUTOPROV_*` variable).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "autoprov",
    version,
    about = "Auto-provisioning server for SIP desk phones and ATAs"
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "AUTOPROV_LISTEN", global = true)]
    pub listen: Option<String>,
    /// Data folder (sled store, admin token, credentials) [default: ./data].
    #[arg(long, env = "AUTOPROV_DATA", global = true)]
    pub data: Option<PathBuf>,
    /// Models folder [default: ./models].
    #[arg(long, env = "AUTOPROV_MODELS", global = true)]
    pub models: Option<PathBuf>,
    /// Templates folder [default: ./templates].
    #[arg(long, env = "AUTOPROV_TEMPLATES", global = true)]
    pub templates: Option<PathBuf>,
    /// Config file [default: ./autoprov.toml if it exists].
    #[arg(long, env = "AUTOPROV_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, env = "AUTOPROV_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
    /// Seconds a client has to send a request's line and headers; also the keep-alive idle
    /// time [default: 10].
    #[arg(long, env = "AUTOPROV_HEADER_READ_TIMEOUT_SECS", global = true)]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a request may take, body read included, before a 408 [default: 30].
    #[arg(long, env = "AUTOPROV_REQUEST_TIMEOUT_SECS", global = true)]
    pub request_timeout_secs: Option<u64>,
    /// Open connections at most; past it a new one gets a 503 [default: 4096].
    #[arg(long, env = "AUTOPROV_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<u64>,
    /// Threads serving requests; 1 runs everything on one thread, without work stealing
    /// [default: the CPUs this process may use].
    #[arg(long, env = "AUTOPROV_WORKERS", global = true)]
    pub workers: Option<u64>,
    /// Bearer token `GET /metrics` requires [default: none, metrics open].
    #[arg(
        long,
        env = "AUTOPROV_METRICS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Firmware folder, served at `/firmware/…` to authenticated phones [default: ./firmware].
    #[arg(long, env = "AUTOPROV_FIRMWARE", global = true)]
    pub firmware: Option<PathBuf>,
    /// The server's base URL as phones reach it (`http://prov.example.com:8080`); templates
    /// get `firmware_url` = this + `/firmware` [default: none, `firmware_url` is `/firmware`].
    #[arg(long, env = "AUTOPROV_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// TLS certificate chain (PEM); with `--tls-key` turns HTTPS on.
    #[arg(long, env = "AUTOPROV_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AUTOPROV_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// HTTPS listen address [default: 0.0.0.0:8443 when a certificate is set].
    #[arg(long, env = "AUTOPROV_HTTPS_LISTEN", global = true)]
    pub https_listen: Option<String>,
    /// `--url` and `--token`: talk to a running server instead of the data folder.
    #[command(flatten)]
    pub remote: Remote,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Write the store to stdout (or --output): the full JSON dump of all data (default;
    /// restores byte-identically with `import`), or the bulk CSV with `--format csv`.
    Export {
        /// Write to this file (created 0600, replaced atomically) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// `json`: the full store dump; `csv`: one row per phone line, the columns `import`
        /// takes (see docs/OPERATIONS.md "Bulk import").
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
    },
    /// Load a file into the store: a full export (restored into an empty store, or with
    /// --replace), or bulk rows as CSV or JSON (validated first, all or nothing).
    Import {
        /// For a full export: replace everything the store holds (else a store with data is
        /// refused). Not used for bulk rows, which add and update.
        #[arg(long)]
        replace: bool,
        /// What FILE is: `auto` detects a full export by its `"format":"autoprov-export"`
        /// header, CSV by a `.csv` name, JSON rows otherwise.
        #[arg(long, value_enum, default_value = "auto")]
        format: ImportFormat,
        /// The file; `-` reads stdin.
        file: PathBuf,
    },
    /// Domain-scoped admin tokens: on the data folder of a stopped server, or with --url on
    /// a running one (its `/api/v1/tokens` routes).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Phones: link (create or update), show, list, delete.
    #[command(subcommand)]
    Phone(PhoneCommand),
    /// A phone's members (the accounts on its lines).
    #[command(subcommand)]
    Members(MembersCommand),
    /// SIP accounts (a user's devices), optionally linked to a phone line.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Print exactly the bytes a phone would get for one of its files (offline preview).
    Render(RenderArgs),
    /// The phone models the server knows (from the models folder).
    Models(ModelsArgs),
}

/// `autoprov token …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token for one domain; prints its id and the token (shown only this once).
    Create {
        /// The domain the token may see and change.
        #[arg(long)]
        domain: String,
    },
    /// List tokens (id, domain, created; never the token).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (from `create` or `list`).
        id: String,
    },
}

/// `--url` / `--token` (global flags).
#[derive(Debug, Clone, Default, Args)]
pub struct Remote {
    /// Send the command to a running server's admin API at this URL (e.g.
    /// http://127.0.0.1:8080) instead of opening the data folder.
    #[arg(long, env = "AUTOPROV_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Admin token for --url (the server-wide one in the data folder's admin-token, or a
    /// domain token where the route allows it).
    #[arg(
        long,
        env = "AUTOPROV_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// `export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The full store dump (everything; byte-identical round trip).
    Json,
    /// Bulk CSV rows (phones, lines, accounts, overrides).
    Csv,
}

/// `import --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// Detect: full export by its header, CSV by a `.csv` name, else JSON rows.
    Auto,
    /// A full store export.
    Export,
    /// Bulk CSV rows.
    Csv,
    /// Bulk JSON rows.
    Json,
}

/// `autoprov phone …`.
#[derive(Debug, Clone, Subcommand)]
pub enum PhoneCommand {
    /// Create a phone or update its model and domain.
    Link {
        /// The phone's MAC (any common notation).
        mac: String,
        /// Model id (see `autoprov models`).
        #[arg(long)]
        model: String,
        /// Domain the phone belongs to (created if missing).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Show one phone: model, domain, overrides, members, last fetch.
    Show {
        /// The phone's MAC.
        mac: String,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List phones (MAC order).
    List {
        /// Only phones of this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only phones of this model.
        #[arg(long)]
        model: Option<String>,
        /// Print JSON (`{"phones": [...]}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a phone (its accounts stay).
    Delete {
        /// The phone's MAC.
        mac: String,
    },
}

/// `autoprov members …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MembersCommand {
    /// Replace a phone's members (the whole list).
    #[command(group = clap::ArgGroup::new("source").required(true).args(["json", "member"]))]
    Set {
        /// The phone's MAC.
        mac: String,
        /// Read the members from a JSON file (`-`: stdin): `[{"port":1,"id":"…"}]` or
        /// `{"members": [...]}`, fields as in `PUT /phones/{mac}/members`.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// One member, repeatable:
        /// `port=1,id=1001a@example.com[,label=…][,type=primary|shared][,weight=N]`
        /// `[,owner=true][,hotline=NUMBER][,decline=false][,t38=true]`.
        #[arg(long, value_name = "port=N,id=ACCOUNT,…")]
        member: Vec<String>,
    },
}

/// `autoprov account …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AccountCommand {
    /// Create or update a SIP account (`device@domain` of `user`); with --mac, link it to
    /// that phone's line (creating the phone with --model).
    Set {
        /// Domain (created if missing).
        domain: String,
        /// User (extension).
        user: String,
        /// Device id: the SIP user and auth name.
        device: String,
        /// SIP registration password (default for a new account: random); `-` reads it
        /// from the first line of stdin (keeps it out of the process list and history).
        #[arg(long)]
        password: Option<String>,
        /// Link to this phone.
        #[arg(long)]
        mac: Option<String>,
        /// The phone's model (required when the phone does not exist yet).
        #[arg(long, requires = "mac")]
        model: Option<String>,
        /// The phone's port (line) for this account (default: the first free one).
        #[arg(long, requires = "mac")]
        line: Option<u32>,
        /// Any other account field of the admin API, repeatable: `key=value` (e.g.
        /// `device-provisioning-sip-transport-protocol=tls`; `key=null` clears it).
        #[arg(long, value_name = "KEY=VALUE")]
        field: Vec<String>,
        /// Print the account's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// `autoprov render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// The phone's MAC.
    pub mac: String,
    /// A file name the phone's model requests (e.g. `001565aabbcc.cfg`, `y000000000066.cfg`).
    pub file: String,
}

/// `autoprov models`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// Print JSON (`{"models": [...]}`, as `GET /api/v1/models`) instead of a table.
    #[arg(long)]
    pub json: bool,
}
