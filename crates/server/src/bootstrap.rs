//! Start-up: data directory, master key, store, the default account and its root credentials, then
//! the listener until SIGTERM or Ctrl-C.

use crate::app::{App, AppConfig};
use crate::audit::{AuditConfig, Auditor};
use crate::http::{self, ListenerLimits};
use crate::session::SESSION_TOKEN_PURPOSE;
use crate::tls::{CertStore, TlsFiles};
use keyward_store::{Account, MasterKey, Sealer, Secret, Store, StoreError};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the SQLite file in the data directory.
pub const DB_FILE: &str = "keyward.db";
/// Name of the generated master key file in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// Name of the file that keeps generated root credentials.
pub const ROOT_CREDENTIALS_FILE: &str = "root-credentials";
/// Name of the default account.
pub const DEFAULT_ACCOUNT_NAME: &str = "default";

/// Root credentials given at start-up.
pub struct RootCredentials {
    /// Access key id (`AKIA...`).
    pub access_key_id: String,
    /// Secret access key.
    pub secret: Secret,
}

impl fmt::Debug for RootCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Everything `keyward serve` needs to start. `Debug` masks the database password.
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory (database, master key, generated root credentials).
    pub data_dir: PathBuf,
    /// Database URL (`sqlite:PATH`, `postgres://...`); `None`: `DATA_DIR/keyward.db`.
    pub database_url: Option<String>,
    /// Master key file; `None`: `DATA_DIR/master.key`, generated when missing.
    pub master_key_file: Option<PathBuf>,
    /// Id of the default account when the store is created.
    pub account_id: Option<String>,
    /// Root credentials of the default account.
    pub root: Option<RootCredentials>,
    /// Application settings.
    pub app: AppConfig,
    /// Listener limits.
    pub limits: ListenerLimits,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Serve over TLS with this certificate and key (reloaded on SIGHUP); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on a non-loopback address (refused otherwise).
    pub allow_plain_http: bool,
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self
                    .database_url
                    .as_deref()
                    .map(keyward_store::mask_database_url),
            )
            .field("master_key_file", &self.master_key_file)
            .field("account_id", &self.account_id)
            .field("root", &self.root)
            .field("app", &self.app)
            .field("limits", &self.limits)
            .field("audit", &self.audit)
            .field("tls", &self.tls)
            .field("allow_plain_http", &self.allow_plain_http)
            .finish()
    }
}

/// A start-up failure, with the message the user sees.
#[derive(Debug)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError(e.to_string())
    }
}

/// Creates the data directory (mode 0700) if it does not exist.
pub fn ensure_data_dir(dir: &Path) -> Result<(), StartError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            StartError(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })
}

/// Where the store lives: `--database-url` / `KEYWARD_DATABASE_URL`, else the SQLite file of the data dir.
pub fn resolve_database_url(data_dir: &Path, database_url: Option<&str>) -> String {
    match database_url {
        Some(u) => u.to_owned(),
        None => format!("sqlite:{}", data_dir.join(DB_FILE).display()),
    }
}

/// Opens the store at `database_url` (default: the SQLite file of `data_dir`) with the master key
/// (from `master_key_file` or generated in the data dir), applying pending migrations, and returns it
/// with the sealer of session tokens derived from the same master key.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
    master_key_file: Option<&Path>,
) -> Result<(Store, Sealer), StartError> {
    ensure_data_dir(data_dir)?;
    let master = match master_key_file {
        Some(p) => MasterKey::load(p)?,
        None => MasterKey::load_or_create(&data_dir.join(MASTER_KEY_FILE))?,
    };
    let sealer = master.sealer(SESSION_TOKEN_PURPOSE);
    let url = resolve_database_url(data_dir, database_url);
    let store = Store::open(&url, master)
        .await
        .map_err(|e| StartError(format!("cannot open the store: {e}")))?;
    Ok((store, sealer))
}

/// The default account, created (with root credentials) when the store has none.
/// Returns the account and, when credentials were generated, the secret to show once.
async fn ensure_default_account(
    store: &Store,
    data_dir: &Path,
    account_id: Option<&str>,
    root: Option<&RootCredentials>,
    endpoint: &str,
) -> Result<Account, StartError> {
    if let Some(id) = account_id {
        if !keyward_ids::is_account_id(id) {
            return Err(StartError(format!("account id {id:?} is not 12 digits")));
        }
    }
    let decoded = root.and_then(|r| keyward_ids::account_of_key_id(&r.access_key_id));
    if let (Some(id), Some(dec)) = (account_id, decoded.as_deref()) {
        if id != dec {
            return Err(StartError(format!(
                "KEYWARD_ROOT_ACCESS_KEY_ID encodes account {dec}, but the account id is {id}; give a key id of account {id} or leave the account id out"
            )));
        }
    }
    let existing = store.get_account_by_name(DEFAULT_ACCOUNT_NAME).await?;
    let account = match existing {
        Some(a) => {
            let wanted = account_id.or(decoded.as_deref());
            if let Some(w) = wanted {
                if w != a.id {
                    return Err(StartError(format!(
                        "the store in {} already holds default account {}, not {w}",
                        data_dir.display(),
                        a.id
                    )));
                }
            }
            a
        }
        None => {
            let id = account_id.map(str::to_owned).or(decoded);
            store
                .create_account(DEFAULT_ACCOUNT_NAME, id.as_deref())
                .await?
        }
    };
    match root {
        Some(r) => match store.get_access_key(&r.access_key_id).await? {
            Some((k, s)) => {
                if k.account_id != account.id || k.user_name.is_some() {
                    return Err(StartError(format!(
                        "access key {} exists but is not the root key of account {}",
                        r.access_key_id, account.id
                    )));
                }
                if !constant_time_eq(s.expose().as_bytes(), r.secret.expose().as_bytes()) {
                    return Err(StartError(format!(
                        "access key {} already exists with another secret; KEYWARD_ROOT_SECRET_ACCESS_KEY does not match it",
                        r.access_key_id
                    )));
                }
            }
            None => {
                store
                    .create_access_key_with(&account.id, None, &r.access_key_id, r.secret.expose())
                    .await?;
            }
        },
        None => {
            if store.list_access_keys(&account.id, None).await?.is_empty() {
                let (key, secret) = store.create_access_key(&account.id, None).await?;
                let path = data_dir.join(ROOT_CREDENTIALS_FILE);
                write_secret_file(
                    &path,
                    &endpoint_profile_text("keyward", &key.key_id, &secret, endpoint),
                )?;
                println!(
                    "keyward: created account {} with root credentials. They are shown once here and kept in {} (mode 0600).\n\
                     Paste this profile into ~/.aws/config, then use `aws --profile keyward ...`:\n\n{}",
                    account.id,
                    path.display(),
                    endpoint_profile_text("keyward", &key.key_id, &secret, endpoint)
                );
            }
        }
    }
    Ok(account)
}

/// An AWS CLI profile (for `~/.aws/config`) with credentials and `endpoint_url`.
pub fn profile_text(name: &str, key_id: &str, secret: &Secret, listen: SocketAddr) -> String {
    endpoint_profile_text(name, key_id, secret, &format!("http://{listen}"))
}

/// An AWS CLI profile (for `~/.aws/config`) with credentials and `endpoint_url = endpoint`.
pub fn endpoint_profile_text(name: &str, key_id: &str, secret: &Secret, endpoint: &str) -> String {
    format!(
        "[profile {name}]\naws_access_key_id = {key_id}\naws_secret_access_key = {}\nregion = us-east-1\nendpoint_url = {endpoint}\n",
        secret.expose()
    )
}

/// Refuses plain HTTP on an address other machines can reach (credentials and signed requests
/// would cross the network in clear text), unless `allow_plain_http`; returns the warning to
/// print when it is allowed.
pub fn check_plain_exposure(
    listen: SocketAddr,
    tls: bool,
    allow_plain_http: bool,
) -> Result<Option<String>, StartError> {
    if tls || listen.ip().to_canonical().is_loopback() {
        return Ok(None);
    }
    if allow_plain_http {
        return Ok(Some(format!(
            "serving plain HTTP on {listen}, which is not a loopback address (--allow-plain-http): \
             requests, session tokens and returned secrets cross the network unencrypted unless a \
             TLS proxy is in front"
        )));
    }
    Err(StartError(format!(
        "refusing to serve plain HTTP on {listen}, which is not a loopback address: requests, \
         session tokens and returned secrets would cross the network unencrypted. Give \
         --tls-cert and --tls-key, listen on 127.0.0.1, or pass --allow-plain-http (e.g. behind \
         a TLS-terminating proxy)"
    )))
}

/// Writes `text` to a new file created with mode 0600 (replacing an older one).
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), StartError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| StartError(format!("cannot create {}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| StartError(format!("cannot write {}: {e}", path.display())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs `keyward serve` until SIGTERM or Ctrl-C.
pub async fn serve(config: ServeConfig) -> Result<(), StartError> {
    if let Some(warning) =
        check_plain_exposure(config.listen, config.tls.is_some(), config.allow_plain_http)?
    {
        tracing::warn!("{warning}");
        eprintln!("keyward: warning: {warning}");
    }
    let certs = match &config.tls {
        Some(files) => Some(Arc::new(CertStore::load(files.clone()).map_err(|e| {
            StartError(format!("cannot load the TLS certificate and key: {e}"))
        })?)),
        None => None,
    };
    let acceptor = match &certs {
        Some(c) => Some(crate::tls::acceptor(Arc::clone(c)).map_err(StartError)?),
        None => None,
    };
    let (store, sealer) = open_store(
        &config.data_dir,
        config.database_url.as_deref(),
        config.master_key_file.as_deref(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{local}");
    let account = ensure_default_account(
        &store,
        &config.data_dir,
        config.account_id.as_deref(),
        config.root.as_ref(),
        &endpoint,
    )
    .await?;
    let mut app = App::new(store.clone(), sealer, config.app);
    let auditor = if config.audit.is_off() {
        None
    } else {
        let a = Auditor::start(config.audit.clone(), store.clone()).map_err(StartError)?;
        app = app.with_auditor(a.clone());
        Some(a)
    };
    let app = Arc::new(app);
    let invalidator = app.spawn_cache_invalidation();
    let refresher = app.spawn_key_refresh();
    tracing::info!(listen = %local, account = %account.id, data_dir = %config.data_dir.display(), "keyward serving");
    eprintln!(
        "keyward: listening on {endpoint} (default account {})",
        account.id
    );
    let reloader = spawn_reload_on_hangup(certs)?;
    match acceptor {
        Some(tls) => http::run_tls(listener, app, config.limits, tls, shutdown_signal()).await,
        None => http::run(listener, app, config.limits, shutdown_signal()).await,
    }
    reloader.abort();
    for t in [invalidator, refresher].into_iter().flatten() {
        t.abort();
    }
    if let Some(a) = auditor {
        // Everything answered so far reaches the log and the store before they close.
        a.close().await;
    }
    store.close().await?;
    eprintln!("keyward: stopped");
    Ok(())
}

/// On SIGHUP, reloads the TLS certificate and key from their files (a bad new pair is logged and
/// the current one kept); without TLS there is nothing to reload, which is logged too. Handling
/// the signal at all keeps SIGHUP from ending the process.
fn spawn_reload_on_hangup(
    certs: Option<Arc<CertStore>>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| StartError(format!("cannot handle SIGHUP: {e}")))?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(certs) = &certs else {
                tracing::info!("SIGHUP: no TLS certificate configured, nothing to reload");
                continue;
            };
            let files = certs.files();
            // Two small files: read on a blocking thread all the same.
            let store = Arc::clone(certs);
            let result = tokio::task::spawn_blocking(move || store.reload())
                .await
                .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
            match result {
                Ok(()) => tracing::info!(
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    "SIGHUP: TLS certificate and key reloaded; new connections use them"
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: TLS reload failed, still serving the previous certificate: {e}"
                ),
            }
        }
    }))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// `keyward account create NAME`: a new account with root credentials, in the store of `data_dir`
/// (safe while a server runs on it).
pub async fn create_account(
    data_dir: &Path,
    database_url: Option<&str>,
    master_key_file: Option<&Path>,
    name: &str,
    account_id: Option<&str>,
) -> Result<(Account, String, Secret), StartError> {
    if let Some(id) = account_id {
        if !keyward_ids::is_account_id(id) {
            return Err(StartError(format!("account id {id:?} is not 12 digits")));
        }
    }
    let (store, _sealer) = open_store(data_dir, database_url, master_key_file).await?;
    let account = store.create_account(name, account_id).await?;
    let (key, secret) = store.create_access_key(&account.id, None).await?;
    store.close().await?;
    Ok((account, key.key_id, secret))
}

/// `keyward migrate`: applies pending schema migrations to the store and reports the URL (masked).
pub async fn migrate(
    data_dir: &Path,
    database_url: Option<&str>,
    master_key_file: Option<&Path>,
) -> Result<String, StartError> {
    let (store, _sealer) = open_store(data_dir, database_url, master_key_file).await?;
    store.close().await?;
    Ok(keyward_store::mask_database_url(&resolve_database_url(
        data_dir,
        database_url,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for ok in [
            "127.0.0.1:1",
            "127.5.6.7:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(
                matches!(check_plain_exposure(addr(ok), false, false), Ok(None)),
                "{ok}"
            );
        }
        for exposed in ["0.0.0.0:4599", "[::]:4599", "10.1.2.3:1", "[2001:db8::1]:1"] {
            let err = check_plain_exposure(addr(exposed), false, false).unwrap_err();
            assert!(err.0.contains("refusing to serve plain HTTP"), "{err}");
            assert!(err.0.contains(exposed), "{err}");
            let warning = check_plain_exposure(addr(exposed), false, true).unwrap();
            assert!(
                warning.is_some_and(|w| w.contains("--allow-plain-http")),
                "{exposed}"
            );
            // TLS may listen anywhere, silently.
            assert!(matches!(
                check_plain_exposure(addr(exposed), true, false),
                Ok(None)
            ));
        }
    }
}
