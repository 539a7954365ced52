//! The one `keyward` binary: thin glue over the library crates.
//!
//! Exit codes: 0 success, 1 a finding or failure the command reports, 2 misuse or start-up error.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc malloc: measured faster for the server's many small, cross-thread
/// allocations (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use keyward_server::app::AppConfig;
use keyward_server::audit::{AuditConfig, AuditLog};
use keyward_server::bootstrap::{self, RootCredentials, ServeConfig};
use keyward_server::http::ListenerLimits;
use keyward_server::throttle::ThrottleConfig;
use keyward_server::tls::TlsFiles;
use keyward_store::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// AWS access keys that work, and a precise answer when they don't.
#[derive(Parser, Debug)]
#[command(name = "keyward", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the AWS-compatible IAM + STS endpoint.
    Serve(ServeArgs),
    /// Manage accounts in the data directory (works while the server runs).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Apply pending schema migrations to the store (`serve` also does this at start-up).
    Migrate {
        /// Store: `sqlite:PATH` or `postgres://...` (default: DATA_DIR/keyward.db).
        #[arg(long, env = "KEYWARD_DATABASE_URL")]
        database_url: Option<DatabaseUrl>,
        /// Data directory (for the default SQLite file and master key).
        #[arg(long, default_value = "./keyward-data", env = "KEYWARD_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Find out exactly why AWS credentials fail: resolve them as the AWS CLI does and check everything.
    Doctor(keyward_doctor::DoctorArgs),
    /// Explain an AWS authentication or credential error (a code, or a whole pasted message).
    Explain(keyward_doctor::ExplainArgs),
    /// Replace a profile's access key with a new one: create, write, verify, deactivate the old.
    Rotate(keyward_doctor::RotateArgs),
    /// Work with the audit log that `serve --audit-log` writes.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the log's hash chain: prints OK and the line count, or the first altered, inserted,
    /// removed or truncated line (exit status 1).
    Verify {
        /// The audit log file.
        path: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4599")]
    listen: SocketAddr,
    /// Data directory: database, master key, generated root credentials.
    #[arg(long, default_value = "./keyward-data", env = "KEYWARD_DATA_DIR")]
    data_dir: PathBuf,
    /// 12-digit id of the default account, used when the store is created.
    #[arg(long, env = "KEYWARD_ACCOUNT_ID")]
    account_id: Option<String>,
    /// Store: `sqlite:PATH` or `postgres://user:password@host:port/db` (default: DATA_DIR/keyward.db).
    #[arg(long, env = "KEYWARD_DATABASE_URL")]
    database_url: Option<DatabaseUrl>,
    /// Seconds a verified key is trusted without asking the store again (changes made through keyward,
    /// on any node, evict it at once; this bounds staleness when a notification is lost, and how long
    /// cached verification survives a database outage).
    #[arg(long, default_value_t = keyward_server::app::DEFAULT_KEY_CACHE_TTL_SECS)]
    key_cache_ttl: u64,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Pretend the server clock is off by this many seconds (to reproduce clock-skew errors).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    clock_offset: i64,
    /// Write every API call and authentication failure as a hash-chained CloudTrail JSON line to
    /// this file (created mode 0600; its directory must exist), or `-` for standard output.
    #[arg(long, env = "KEYWARD_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Days audit events stay in the store for CloudTrail LookupEvents (0: keep none there).
    #[arg(long, default_value_t = keyward_server::audit::DEFAULT_RETENTION_DAYS)]
    audit_retention_days: u64,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, leaf first; needs
    /// --tls-key. `kill -HUP` reloads both files without dropping connections.
    #[arg(
        long,
        value_name = "PEM",
        env = "KEYWARD_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "PEM",
        env = "KEYWARD_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (e.g. behind a TLS-terminating proxy); refused
    /// otherwise.
    #[arg(long)]
    allow_plain_http: bool,
    /// Failed authentications a source address (IPv6: its /64) may have per window; past it, all its
    /// requests get the throttling error (`Throttling`, S3 `SlowDown`). 0 disables.
    #[arg(long, default_value_t = keyward_server::throttle::DEFAULT_FAILURES_PER_SOURCE)]
    auth_failures_per_source: u32,
    /// Failed authentications an access key id may have per window, from all sources; past it, sources
    /// that failed for the key are refused and further failures get the throttling error, while
    /// correctly signed requests still pass. 0 disables.
    #[arg(long, default_value_t = keyward_server::throttle::DEFAULT_FAILURES_PER_KEY)]
    auth_failures_per_key: u32,
    /// Seconds allowed to receive a request's body once its headers are in.
    #[arg(long, default_value_t = keyward_server::app::DEFAULT_BODY_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout: u64,
    /// Length in seconds of the sliding window of failed-authentication counts.
    #[arg(long, default_value_t = keyward_server::throttle::DEFAULT_WINDOW_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    auth_failure_window: u64,
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Create an account and print its id and root credentials (shown once).
    Create {
        /// Account name.
        name: String,
        /// Data directory of the server.
        #[arg(long, default_value = "./keyward-data", env = "KEYWARD_DATA_DIR")]
        data_dir: PathBuf,
        /// Use this 12-digit account id instead of a random one.
        #[arg(long)]
        account_id: Option<String>,
        /// Store: `sqlite:PATH` or `postgres://...` (default: DATA_DIR/keyward.db).
        #[arg(long, env = "KEYWARD_DATABASE_URL")]
        database_url: Option<DatabaseUrl>,
    },
}

/// A database URL as typed; `Debug` masks its password (`--database-url` may carry one).
#[derive(Clone)]
struct DatabaseUrl(String);

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_owned()))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&keyward_store::mask_database_url(&self.0))
    }
}

fn db_url(u: &Option<DatabaseUrl>) -> Option<&str> {
    u.as_ref().map(|u| u.0.as_str())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Reads the bootstrap root credentials: both variables or neither, each well-formed.
fn root_from_env() -> Result<Option<RootCredentials>, String> {
    let id = std::env::var("KEYWARD_ROOT_ACCESS_KEY_ID").ok();
    let secret = std::env::var("KEYWARD_ROOT_SECRET_ACCESS_KEY").ok();
    match (id, secret) {
        (None, None) => Ok(None),
        (Some(_), None) => Err("KEYWARD_ROOT_ACCESS_KEY_ID is set but KEYWARD_ROOT_SECRET_ACCESS_KEY is not: set both or neither".into()),
        (None, Some(_)) => Err("KEYWARD_ROOT_SECRET_ACCESS_KEY is set but KEYWARD_ROOT_ACCESS_KEY_ID is not: set both or neither".into()),
        (Some(id), Some(secret)) => {
            if keyward_ids::key_kind(&id) != Some(keyward_ids::KeyKind::LongTerm) {
                return Err(format!(
                    "KEYWARD_ROOT_ACCESS_KEY_ID {id:?} is not a long-term access key id: expected AKIA followed by 16 characters of A-Z and 2-7"
                ));
            }
            if !keyward_ids::is_well_formed_secret(&secret) {
                return Err(format!(
                    "KEYWARD_ROOT_SECRET_ACCESS_KEY is not a secret access key: expected 40 characters of A-Z, a-z, 0-9, + and / (got {} characters)",
                    secret.chars().count()
                ));
            }
            Ok(Some(RootCredentials { access_key_id: id, secret: Secret::new(secret) }))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let root = root_from_env()?;
    let master_key_file = std::env::var_os("KEYWARD_MASTER_KEY_FILE").map(PathBuf::from);
    let config = ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url.map(|u| u.0),
        master_key_file,
        account_id: args.account_id,
        root,
        app: AppConfig {
            clock_offset_secs: args.clock_offset,
            key_cache_ttl: std::time::Duration::from_secs(args.key_cache_ttl),
            throttle: ThrottleConfig {
                per_source: args.auth_failures_per_source,
                per_key: args.auth_failures_per_key,
                window: std::time::Duration::from_secs(args.auth_failure_window),
                ..ThrottleConfig::default()
            },
            body_read_timeout: std::time::Duration::from_secs(args.body_read_timeout),
            ..AppConfig::default()
        },
        limits: ListenerLimits {
            max_connections: args.max_connections,
            ..ListenerLimits::default()
        },
        audit: AuditConfig {
            log: args.audit_log.map(|p| {
                if p.as_os_str() == "-" {
                    AuditLog::Stdout
                } else {
                    AuditLog::File(p)
                }
            }),
            retention: std::time::Duration::from_secs(
                args.audit_retention_days.saturating_mul(86_400),
            ),
            ..AuditConfig::default()
        },
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            // clap requires both or neither.
            _ => None,
        },
        allow_plain_http: args.allow_plain_http,
    };
    runtime()?
        .block_on(bootstrap::serve(config))
        .map_err(|e| e.to_string())
}

fn account(cmd: AccountCommand) -> Result<(), String> {
    match cmd {
        AccountCommand::Create {
            name,
            data_dir,
            account_id,
            database_url,
        } => {
            let master_key_file = std::env::var_os("KEYWARD_MASTER_KEY_FILE").map(PathBuf::from);
            let (account, key_id, secret) = runtime()?
                .block_on(bootstrap::create_account(
                    &data_dir,
                    db_url(&database_url),
                    master_key_file.as_deref(),
                    &name,
                    account_id.as_deref(),
                ))
                .map_err(|e| e.to_string())?;
            println!("account_id = {}", account.id);
            println!("name = {}", account.name);
            println!("aws_access_key_id = {key_id}");
            println!("aws_secret_access_key = {}", secret.expose());
            Ok(())
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn migrate(data_dir: &std::path::Path, database_url: Option<&str>) -> Result<(), String> {
    let master_key_file = std::env::var_os("KEYWARD_MASTER_KEY_FILE").map(PathBuf::from);
    let url = runtime()?
        .block_on(bootstrap::migrate(
            data_dir,
            database_url,
            master_key_file.as_deref(),
        ))
        .map_err(|e| e.to_string())?;
    println!("keyward: schema of {url} is up to date");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => {
            let mut out = std::io::stdout().lock();
            return exit(keyward_doctor::run_doctor(
                &args,
                &keyward_doctor::SystemEnvironment,
                &mut out,
            ));
        }
        Command::Explain(args) => {
            let mut out = std::io::stdout().lock();
            return exit(keyward_doctor::run_explain(&args, &mut out));
        }
        Command::Rotate(args) => {
            let mut out = std::io::stdout().lock();
            return exit(keyward_doctor::run_rotate(
                &args,
                &keyward_doctor::SystemEnvironment,
                &mut out,
            ));
        }
        other => other,
    };
    init_logging();
    let result = match result {
        Command::Serve(args) => serve(args),
        Command::Account(cmd) => account(cmd),
        Command::Migrate {
            database_url,
            data_dir,
        } => migrate(&data_dir, db_url(&database_url)),
        Command::Audit(AuditCommand::Verify { path }) => {
            return match keyward_server::audit::chain::verify_file(&path) {
                Ok(Ok(head)) => {
                    println!(
                        "OK: {} lines, chain intact; last hash {}",
                        head.seq, head.hash
                    );
                    ExitCode::SUCCESS
                }
                Ok(Err(broken)) => {
                    println!("{}: {broken}", path.display());
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("keyward: error: cannot read {}: {e}", path.display());
                    ExitCode::from(2)
                }
            };
        }
        Command::Doctor(_) | Command::Explain(_) | Command::Rotate(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("keyward: error: {msg}");
            ExitCode::from(2)
        }
    }
}
