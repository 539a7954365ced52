//! Credential resolution exactly as the AWS CLI does it (botocore's provider chain), keeping where
//! every value came from.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::env::{expand_path, Environment};
use crate::finding::Location;
use crate::ini::{self, Entry, IniFile, Section};

/// Which AWS CLI's rules to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CliVersion {
    /// AWS CLI v1 (and boto3/botocore): `AWS_DEFAULT_PROFILE` before `AWS_PROFILE`, region from
    /// `AWS_DEFAULT_REGION` only.
    V1,
    /// AWS CLI v2: `AWS_PROFILE` before `AWS_DEFAULT_PROFILE`, `AWS_REGION` before `AWS_DEFAULT_REGION`.
    #[default]
    V2,
}

/// A secret value (secret access key or session token). `Debug` and `Display` show it masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; only for signing and checks, never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The AWS CLI's masking: 16 stars and the last 4 characters.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// `aws configure list` masking: `****************` plus the last 4 characters (escaped when they are
/// invisible). Values shorter than 12 characters show no characters at all, so a short secret is never
/// mostly revealed (the CLI would print it whole).
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    let stars = "*".repeat(16);
    if n < 12 {
        return stars;
    }
    let tail: String = value.chars().skip(n - 4).collect();
    format!("{stars}{}", ini::escape(&tail))
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// A file, at a position.
    File {
        /// Where.
        #[serde(flatten)]
        location: Location,
    },
    /// A command-line flag.
    Flag {
        /// The flag, e.g. `--profile`.
        flag: String,
    },
    /// A built-in default.
    Default,
}

impl Source {
    pub(crate) fn env(var: &str) -> Self {
        Source::Env {
            var: var.to_string(),
        }
    }
    pub(crate) fn file(path: &Path, pos: ini::Pos) -> Self {
        Source::File {
            location: Location::new(path, pos),
        }
    }
    /// The file location, when the source is a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Source::File { location } => Some(location),
            _ => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env { var } => write!(f, "env {var}"),
            Source::File { location } => write!(f, "{location}"),
            Source::Flag { flag } => write!(f, "flag {flag}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub source: Source,
}

/// botocore's credential providers, in chain order (their `METHOD` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// `AWS_ACCESS_KEY_ID` and friends.
    Env,
    /// A profile with `role_arn` (and `source_profile` or `credential_source`).
    AssumeRole,
    /// `web_identity_token_file` + `role_arn`.
    AssumeRoleWithWebIdentity,
    /// IAM Identity Center (`sso_session` / `sso_start_url`).
    Sso,
    /// Static keys in the shared credentials file.
    SharedCredentialsFile,
    /// `login_session` (aws login).
    Login,
    /// `credential_process`.
    CustomProcess,
    /// Static keys in the config file.
    ConfigFile,
    /// The legacy `AWS_CREDENTIAL_FILE` (CLI v1 only).
    Ec2CredentialsFile,
    /// boto2's `[Credentials]` in `BOTO_CONFIG`, `/etc/boto.cfg` or `~/.boto` (CLI v1 only).
    BotoConfig,
    /// The ECS/EKS container credentials endpoint.
    ContainerRole,
    /// EC2 instance metadata.
    IamRole,
}

impl Provider {
    /// botocore's method name, as `aws configure list` shows it in the Type column.
    pub fn method(self) -> &'static str {
        match self {
            Provider::Env => "env",
            Provider::AssumeRole => "assume-role",
            Provider::AssumeRoleWithWebIdentity => "assume-role-with-web-identity",
            Provider::Sso => "sso",
            Provider::SharedCredentialsFile => "shared-credentials-file",
            Provider::Login => "login",
            Provider::CustomProcess => "custom-process",
            Provider::ConfigFile => "config-file",
            Provider::Ec2CredentialsFile => "ec2-credentials-file",
            Provider::BotoConfig => "boto-config",
            Provider::ContainerRole => "container-role",
            Provider::IamRole => "iam-role",
        }
    }
}

/// Static credentials the chain settled on, each value with its source.
#[derive(Clone, Debug)]
pub struct ResolvedCredentials {
    /// The provider that returned them.
    pub provider: Provider,
    /// The access key id.
    pub access_key_id: Sourced<String>,
    /// The secret access key.
    pub secret_access_key: Sourced<Secret>,
    /// The session token, when one is attached.
    pub session_token: Option<Sourced<Secret>>,
    /// `AWS_CREDENTIAL_EXPIRATION`, when set.
    pub expiration: Option<Sourced<String>>,
    /// The account id the configuration states (`AWS_ACCOUNT_ID` / `aws_account_id`).
    pub account_id: Option<Sourced<String>>,
}

/// Why the chain produced no usable credentials (what the CLI would print instead of running).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// "Unable to parse config file: PATH".
    ParseError {
        /// The file botocore rejects.
        path: PathBuf,
    },
    /// "The config profile (NAME) could not be found".
    ProfileNotFound {
        /// The missing profile.
        name: String,
    },
    /// "Partial credentials found in PROVIDER, missing: VAR".
    Partial {
        /// The provider that stopped the chain.
        provider: Provider,
        /// The missing variable or key.
        missing: String,
    },
    /// "Unable to locate credentials".
    NoCredentials,
    /// `AWS_CREDENTIAL_FILE` names a file that cannot be read: the chain aborts.
    LegacyFileMissing {
        /// The path.
        path: PathBuf,
    },
    /// botocore's `InfiniteLoopConfigError`: `source_profile` leads back to a profile already on
    /// the way.
    InfiniteLoop {
        /// botocore's message.
        message: String,
        /// The role option of the profile where the loop closes.
        at: Option<Location>,
    },
    /// botocore's `InvalidConfigError`: the profile selects a provider without what it needs.
    InvalidConfig {
        /// botocore's message.
        message: String,
        /// The option that selected the provider.
        at: Option<Location>,
    },
    /// botocore's `CredentialRetrievalError` raised before any request: a role's
    /// `credential_source` that has no credentials to give.
    CredentialRetrieval {
        /// botocore's message.
        message: String,
        /// The `credential_source` option.
        at: Option<Location>,
    },
}

/// What the chain ends with.
#[derive(Clone, Debug)]
pub enum ChainOutcome {
    /// Static keys (env or a file): fully inspected.
    Static(Box<ResolvedCredentials>),
    /// A provider that fetches credentials at run time; offline we can only say which and why.
    Deferred {
        /// The provider.
        provider: Provider,
        /// What triggered it (a key and where, or an env var).
        trigger: Source,
    },
    /// The CLI would fail before sending anything.
    Failed(ChainError),
}

/// State of one of the two shared files.
#[derive(Clone, Debug)]
pub enum FileState {
    /// Not a regular file: botocore ignores it (`ConfigNotFound`).
    Missing,
    /// A file that could not be read: botocore silently treats it as empty.
    Unreadable(String),
    /// Parsed.
    Parsed(IniFile),
}

/// One of the two shared files, where its path came from and what it holds.
#[derive(Clone, Debug)]
pub struct SharedFile {
    /// The expanded path.
    pub path: PathBuf,
    /// `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`, or the default.
    pub path_source: Source,
    /// Unix permission bits, when known.
    pub mode: Option<u32>,
    /// The content.
    pub state: FileState,
}

impl SharedFile {
    fn load(path: PathBuf, path_source: Source) -> Self {
        let meta = std::fs::metadata(&path);
        let is_file = meta.as_ref().map(|m| m.is_file()).unwrap_or(false);
        let mode = meta.as_ref().ok().and_then(unix_mode);
        let state = if !is_file {
            FileState::Missing
        } else {
            match std::fs::read(&path) {
                Ok(bytes) => FileState::Parsed(ini::parse(&path, &bytes)),
                Err(e) => FileState::Unreadable(e.to_string()),
            }
        };
        SharedFile {
            path,
            path_source,
            mode,
            state,
        }
    }

    /// The parsed file, if it was read.
    pub fn ini(&self) -> Option<&IniFile> {
        match &self.state {
            FileState::Parsed(f) => Some(f),
            _ => None,
        }
    }
}

#[cfg(unix)]
fn unix_mode(m: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn unix_mode(_: &std::fs::Metadata) -> Option<u32> {
    None
}

/// A profile's options as botocore sees them across both files.
#[derive(Clone, Debug, Default)]
pub struct ProfileView<'a> {
    /// The section in the credentials file named exactly like the profile.
    pub credentials: Option<&'a Section>,
    /// The config file section botocore maps to the profile (`[profile NAME]`, or `[default]`).
    pub config: Option<&'a Section>,
}

/// An option found in a profile, with the file it is in.
#[derive(Clone, Copy, Debug)]
pub struct Found<'a> {
    /// The option.
    pub entry: &'a Entry,
    /// The file it is in.
    pub path: &'a Path,
}

impl Found<'_> {
    /// Its value's source.
    pub fn source(&self) -> Source {
        Source::file(self.path, self.entry.value_pos)
    }
    /// Where the key is.
    pub fn location(&self) -> Location {
        Location::new(self.path, self.entry.key_pos)
    }
}

/// Everything the doctor knows after resolving, before judging.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// Which CLI's rules were followed.
    pub cli: CliVersion,
    /// The profile explicitly selected (`--profile`, `AWS_PROFILE`, `AWS_DEFAULT_PROFILE`), if any.
    pub profile: Option<Sourced<String>>,
    /// The other profile variable when both are set and it lost.
    pub shadowed_profile: Option<Sourced<String>>,
    /// The config file.
    pub config: SharedFile,
    /// The credentials file.
    pub credentials: SharedFile,
    /// The region and its source.
    pub region: Option<Sourced<String>>,
    /// What the provider chain ends with.
    pub outcome: ChainOutcome,
    /// The STS endpoint requests would go to.
    pub endpoint: Endpoint,
}

/// Where the STS call of the live probe (and the CLI's own STS calls) would go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The URL.
    pub url: String,
    /// Where it came from (`Default` for AWS's own endpoint for the region).
    pub source: Source,
}

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `--profile`.
    pub profile: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--endpoint-url`.
    pub endpoint_url: Option<String>,
    /// `--cli`.
    pub cli: CliVersion,
}

impl Resolution {
    /// The profile name botocore uses for credentials (`default` when none is selected).
    pub fn profile_name(&self) -> &str {
        self.profile
            .as_ref()
            .map_or("default", |p| p.value.as_str())
    }

    /// The selected profile's sections in both files.
    pub fn profile_view(&self) -> ProfileView<'_> {
        view_for(&self.config, &self.credentials, self.profile_name())
    }

    /// An option of the selected profile as botocore's merged `full_config` returns it (the
    /// credentials file wins over the config file; `[DEFAULT]` values are inherited).
    pub fn get(&self, key: &str) -> Option<Found<'_>> {
        let view = self.profile_view();
        self.get_in(&view, key)
    }

    pub(crate) fn get_in<'a>(&'a self, view: &ProfileView<'a>, key: &str) -> Option<Found<'a>> {
        if let (Some(s), Some(f)) = (view.credentials, self.credentials.ini()) {
            if let Some(entry) = f.lookup(s, key) {
                return Some(Found {
                    entry,
                    path: &f.path,
                });
            }
        }
        if let (Some(s), Some(f)) = (view.config, self.config.ini()) {
            if let Some(entry) = f.lookup(s, key) {
                return Some(Found {
                    entry,
                    path: &f.path,
                });
            }
        }
        None
    }
}

/// The config-file section for each profile name, as botocore's `build_profile_map` builds it
/// (file order; a later section for the same profile replaces an earlier one).
pub(crate) fn config_profiles(f: &IniFile) -> Vec<(String, &Section)> {
    let mut out: Vec<(String, &Section)> = Vec::new();
    for s in &f.sections {
        let name = if s.name.starts_with("profile") {
            match shlex_split(&s.name) {
                Some(parts) if parts.len() == 2 => parts[1].clone(),
                _ => continue,
            }
        } else if s.name == "default" {
            "default".to_string()
        } else {
            continue;
        };
        out.retain(|(n, _)| *n != name);
        out.push((name, s));
    }
    out
}

/// The profile names botocore's `load_config` finds in a config file (`[default]`, `[profile NAME]`).
pub fn config_profile_names(f: &IniFile) -> Vec<String> {
    config_profiles(f).into_iter().map(|(n, _)| n).collect()
}

/// `services NAME` sections of the config file, by NAME.
pub(crate) fn config_services(f: &IniFile) -> Vec<(String, &Section)> {
    let mut out: Vec<(String, &Section)> = Vec::new();
    for s in &f.sections {
        if s.name.starts_with("services") {
            if let Some(parts) = shlex_split(&s.name) {
                if parts.len() == 2 {
                    out.retain(|(n, _)| *n != parts[1]);
                    out.push((parts[1].clone(), s));
                }
            }
        }
    }
    out
}

fn view_for<'a>(config: &'a SharedFile, creds: &'a SharedFile, name: &str) -> ProfileView<'a> {
    ProfileView {
        credentials: creds.ini().and_then(|f| f.section(name)),
        config: config.ini().and_then(|f| {
            config_profiles(f)
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s)
        }),
    }
}

/// Every profile name botocore knows (config profiles and credentials sections).
pub(crate) fn all_profiles(config: &SharedFile, creds: &SharedFile) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Some(f) = config.ini() {
        names.extend(config_profiles(f).into_iter().map(|(n, _)| n));
    }
    if let Some(f) = creds.ini() {
        for s in &f.sections {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
    }
    names
}

/// Python's `shlex.split(s)` (POSIX mode, no comments); `None` where Python raises `ValueError`.
pub(crate) fn shlex_split(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' => {
                cur.push(chars.next()?);
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let n = chars.next()?;
                            if n != '"' && n != '\\' {
                                cur.push('\\');
                            }
                            cur.push(n);
                        }
                        c => cur.push(c),
                    }
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

/// Reads the environment variable `name` as a sourced value.
fn env_value(env: &dyn Environment, name: &str) -> Option<Sourced<String>> {
    env.var(name).map(|value| Sourced {
        value,
        source: Source::env(name),
    })
}

/// `AWS_EC2_METADATA_DISABLED=true` (any case): botocore's instance metadata fetcher asks nothing.
fn imds_disabled(env: &dyn Environment) -> bool {
    env.var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Non-empty environment variable (botocore's `environ.get(name, '')` truthiness).
fn env_nonempty(env: &dyn Environment, name: &str) -> Option<Sourced<String>> {
    env_value(env, name).filter(|v| !v.value.is_empty())
}

/// Resolves the profile, files, region, credentials and endpoint as the AWS CLI would.
pub fn resolve(req: &Request, env: &dyn Environment) -> Resolution {
    // Profile: --profile, then the two env vars in the CLI version's order (set-but-empty counts).
    let order: [&str; 2] = match req.cli {
        CliVersion::V1 => ["AWS_DEFAULT_PROFILE", "AWS_PROFILE"],
        CliVersion::V2 => ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"],
    };
    let from_env: Vec<Sourced<String>> = order.iter().filter_map(|n| env_value(env, n)).collect();
    let (profile, shadowed_profile) = match &req.profile {
        Some(p) => (
            Some(Sourced {
                value: p.clone(),
                source: Source::Flag {
                    flag: "--profile".into(),
                },
            }),
            from_env.into_iter().next(),
        ),
        None => {
            let mut it = from_env.into_iter();
            let first = it.next();
            let second = it
                .next()
                .filter(|s| Some(&s.value) != first.as_ref().map(|f| &f.value));
            (first, second)
        }
    };
    let disable_env = req.profile.is_some();

    let file = |var: &str, default: &str| -> SharedFile {
        match env.var(var) {
            Some(p) => SharedFile::load(expand_path(&p, env), Source::env(var)),
            None => SharedFile::load(expand_path(default, env), Source::Default),
        }
    };
    let config = file("AWS_CONFIG_FILE", "~/.aws/config");
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials");

    let mut r = Resolution {
        cli: req.cli,
        profile,
        shadowed_profile,
        config,
        credentials,
        region: None,
        outcome: ChainOutcome::Failed(ChainError::NoCredentials),
        endpoint: Endpoint {
            url: String::new(),
            source: Source::Default,
        },
    };
    r.region = resolve_region(&r, req, env);
    r.endpoint = resolve_endpoint(&r, req, env);
    r.outcome = run_chain(&r, env, disable_env);
    r
}

fn resolve_region(r: &Resolution, req: &Request, env: &dyn Environment) -> Option<Sourced<String>> {
    if let Some(region) = &req.region {
        return Some(Sourced {
            value: region.clone(),
            source: Source::Flag {
                flag: "--region".into(),
            },
        });
    }
    let vars: &[&str] = match req.cli {
        CliVersion::V1 => &["AWS_DEFAULT_REGION"],
        CliVersion::V2 => &["AWS_REGION", "AWS_DEFAULT_REGION"],
    };
    for v in vars {
        if let Some(s) = env_value(env, v) {
            return Some(s);
        }
    }
    r.get("region").map(|f| Sourced {
        value: f.entry.value.clone(),
        source: f.source(),
    })
}

/// AWS's own STS endpoint for a region (regional endpoints, the default of both CLIs today).
pub fn default_sts_endpoint(region: Option<&str>) -> String {
    match region {
        None | Some("") | Some("aws-global") => "https://sts.amazonaws.com".to_string(),
        Some(r) if r.starts_with("cn-") => format!("https://sts.{r}.amazonaws.com.cn"),
        Some(r) => format!("https://sts.{r}.amazonaws.com"),
    }
}

fn resolve_endpoint(r: &Resolution, req: &Request, env: &dyn Environment) -> Endpoint {
    if let Some(url) = &req.endpoint_url {
        return Endpoint {
            url: url.clone(),
            source: Source::Flag {
                flag: "--endpoint-url".into(),
            },
        };
    }
    let ignore_env = env
        .var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .map(|v| v.eq_ignore_ascii_case("true"));
    let ignore = ignore_env.unwrap_or_else(|| {
        r.get("ignore_configured_endpoint_urls")
            .is_some_and(|f| f.entry.value.eq_ignore_ascii_case("true"))
    });
    if !ignore {
        for var in ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"] {
            if let Some(s) = env_nonempty(env, var) {
                return Endpoint {
                    url: s.value,
                    source: s.source,
                };
            }
        }
        if let (Some(svc), Some(cfg)) = (r.get("services"), r.config.ini()) {
            if let Some((_, section)) = config_services(cfg)
                .into_iter()
                .find(|(n, _)| *n == svc.entry.value)
            {
                if let Some(e) = cfg.lookup(section, "sts") {
                    if let Ok(pairs) = e.nested() {
                        if let Some((_, url)) = pairs.iter().find(|(k, _)| k == "endpoint_url") {
                            let line = e
                                .continuation_lines
                                .first()
                                .copied()
                                .unwrap_or(e.key_pos.line);
                            return Endpoint {
                                url: url.clone(),
                                source: Source::file(&cfg.path, ini::Pos { line, col: 1 }),
                            };
                        }
                    }
                }
            }
        }
        if let Some(f) = r.get("endpoint_url") {
            return Endpoint {
                url: f.entry.value.clone(),
                source: f.source(),
            };
        }
    }
    Endpoint {
        url: default_sts_endpoint(r.region.as_ref().map(|s| s.value.as_str())),
        source: Source::Default,
    }
}

/// The `credential_source` values botocore's assume-role provider accepts.
const CREDENTIAL_SOURCES: [&str; 3] = ["EcsContainer", "Ec2InstanceMetadata", "Environment"];

/// What botocore's assume-role provider checks in `profile`'s role settings before calling STS
/// (`_get_role_config`, `_validate_source_profile`, `_resolve_credentials_from_profile`), following
/// `source_profile` from profile to profile; `visited` holds the profiles on the way, the
/// selected one first.
fn check_role(
    r: &Resolution,
    env: &dyn Environment,
    profile: &str,
    visited: &mut Vec<String>,
) -> Result<(), ChainError> {
    let view = view_for(&r.config, &r.credentials, profile);
    let get = |k: &str| r.get_in(&view, k);
    let at = get("role_arn").map(|f| f.location());
    let invalid = |message: String| ChainError::InvalidConfig {
        message,
        at: at.clone(),
    };
    match (get("source_profile"), get("credential_source")) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "The profile \"{profile}\" contains both source_profile and credential_source."
        ))),
        (None, None) => Err(ChainError::Partial {
            provider: Provider::AssumeRole,
            missing: "source_profile or credential_source".into(),
        }),
        (None, Some(cs)) => {
            let name = cs.entry.value.as_str();
            if !CREDENTIAL_SOURCES.contains(&name) {
                return Err(invalid(format!(
                    "The credential source \"{name}\" referenced in profile \"{profile}\" is not valid."
                )));
            }
            // botocore asks the source for credentials before it calls STS; these three find
            // none without their environment.
            let available = match name {
                "Environment" => env_nonempty(env, "AWS_ACCESS_KEY_ID").is_some(),
                "Ec2InstanceMetadata" => !imds_disabled(env),
                _ => [
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                ]
                .iter()
                .any(|v| env_value(env, v).is_some()),
            };
            if available {
                Ok(())
            } else {
                Err(ChainError::CredentialRetrieval {
                    message: format!(
                        "Error when retrieving credentials from {name}: No credentials found in credential_source referenced in profile {profile}"
                    ),
                    at: Some(cs.location()),
                })
            }
        }
        (Some(sp), None) => {
            let source = sp.entry.value.clone();
            if !all_profiles(&r.config, &r.credentials).contains(&source) {
                return Err(invalid(format!(
                    "The source_profile \"{source}\" referenced in the profile \"{profile}\" does not exist."
                )));
            }
            let sview = view_for(&r.config, &r.credentials, &source);
            let sget = |k: &str| r.get_in(&sview, k);
            let has_static =
                sget("aws_access_key_id").is_some() || sget("aws_secret_access_key").is_some();
            if visited.contains(&source) && (source != profile || !has_static) {
                return Err(ChainError::InfiniteLoop {
                    message: format!(
                        "Infinite loop in credential configuration detected. Attempting to load from profile {source} which has already been visited. Visited profiles: [{}]",
                        visited.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
                    ),
                    at: at.clone(),
                });
            }
            visited.push(source.clone());
            // botocore's `_has_assume_role_config_vars`: a role not meant for web identity.
            let role_vars = sget("role_arn").is_some() && sget("web_identity_token_file").is_none();
            if has_static || !role_vars {
                // The source profile's own providers, environment variables left out: keys in
                // either file (a key id without its secret stops the chain), or a provider that
                // fetches credentials at run time.
                let files = [
                    (
                        sview.credentials,
                        r.credentials.ini(),
                        Provider::SharedCredentialsFile,
                    ),
                    (sview.config, r.config.ini(), Provider::ConfigFile),
                ];
                for (section, file, provider) in files {
                    if let (Some(s), Some(f)) = (section, file) {
                        match static_from(f, s, provider) {
                            Some(ChainOutcome::Failed(e)) => return Err(e),
                            Some(_) => return Ok(()),
                            None => {}
                        }
                    }
                }
                let fetched = [
                    "credential_process",
                    "sso_role_name",
                    "sso_account_id",
                    "web_identity_token_file",
                    "login_session",
                ]
                .iter()
                .any(|k| sget(k).is_some());
                if fetched {
                    return Ok(());
                }
                return Err(invalid(format!(
                    "The source profile \"{source}\" must have credentials."
                )));
            }
            check_role(r, env, &source, visited)
        }
    }
}

/// The config file's `[sso-session NAME]` section (botocore splits the header like a shell
/// command line and takes it when it has exactly the two words).
fn sso_session<'a>(config: &'a SharedFile, name: &str) -> Option<&'a crate::ini::Section> {
    config.ini()?.sections.iter().rev().find(|s| {
        let mut words = s.name.split_whitespace();
        words.next() == Some("sso-session") && words.next() == Some(name) && words.next().is_none()
    })
}

fn run_chain(r: &Resolution, env: &dyn Environment, disable_env: bool) -> ChainOutcome {
    use ChainOutcome::{Deferred, Failed, Static};
    // Any parse error aborts the CLI before the chain runs (session.full_config parses both files).
    for f in [&r.config, &r.credentials] {
        if f.ini().is_some_and(|i| i.botocore_fails()) {
            return Failed(ChainError::ParseError {
                path: f.path.clone(),
            });
        }
    }
    // An explicitly selected profile must exist, even when env keys would win.
    if let Some(p) = &r.profile {
        if !all_profiles(&r.config, &r.credentials).contains(&p.value) {
            return Failed(ChainError::ProfileNotFound {
                name: p.value.clone(),
            });
        }
    }
    if !disable_env {
        if let Some(key) = env_nonempty(env, "AWS_ACCESS_KEY_ID") {
            let Some(secret) = env_nonempty(env, "AWS_SECRET_ACCESS_KEY") else {
                return Failed(ChainError::Partial {
                    provider: Provider::Env,
                    missing: "AWS_SECRET_ACCESS_KEY".into(),
                });
            };
            let token = ["AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"]
                .iter()
                .find_map(|n| env_nonempty(env, n));
            return Static(Box::new(ResolvedCredentials {
                provider: Provider::Env,
                access_key_id: key,
                secret_access_key: secret_of(secret),
                session_token: token.map(secret_of),
                expiration: env_nonempty(env, "AWS_CREDENTIAL_EXPIRATION"),
                account_id: env_nonempty(env, "AWS_ACCOUNT_ID"),
            }));
        }
    }
    let view = r.profile_view();
    let get = |k: &str| r.get_in(&view, k);
    let deferred = |p: Provider, f: Found<'_>| Deferred {
        provider: p,
        trigger: Source::File {
            location: f.location(),
        },
    };
    // assume-role: role_arn without web_identity_token_file. botocore checks the role's settings
    // and its source profiles before it calls STS: those failures are offline facts.
    if let Some(f) = get("role_arn") {
        if get("web_identity_token_file").is_none() {
            if let Err(e) = check_role(
                r,
                env,
                r.profile_name(),
                &mut vec![r.profile_name().to_owned()],
            ) {
                return Failed(e);
            }
            return deferred(Provider::AssumeRole, f);
        }
    }
    // web identity (botocore's `_get_config`): each setting from its environment variable when
    // that is set at all, even empty (unless --profile was given), else from the profile; a token
    // file with no role ARN is an error.
    let web_identity = |key: &str, var: &str| -> Option<(String, Source)> {
        if !disable_env {
            if let Some(v) = env_value(env, var) {
                return Some((v.value, v.source));
            }
        }
        get(key).map(|f| {
            (
                f.entry.value.clone(),
                Source::File {
                    location: f.location(),
                },
            )
        })
    };
    if let Some((_, token_source)) =
        web_identity("web_identity_token_file", "AWS_WEB_IDENTITY_TOKEN_FILE")
            .filter(|(v, _)| !v.is_empty())
    {
        if web_identity("role_arn", "AWS_ROLE_ARN").is_some_and(|(v, _)| !v.is_empty()) {
            return Deferred {
                provider: Provider::AssumeRoleWithWebIdentity,
                trigger: token_source,
            };
        }
        return Failed(ChainError::InvalidConfig {
            message: "The provided profile or the current environment is configured to assume role with web identity but has no role ARN configured. Ensure that the profile has the role_arnconfiguration set or the AWS_ROLE_ARN env var is set.".into(),
            at: token_source.location().cloned(),
        });
    }
    // IAM Identity Center: botocore's SSO provider runs when the profile names sso_role_name or
    // sso_account_id (sso_start_url or sso_session alone do not select it), and then needs all
    // four settings, from the profile or from the [sso-session NAME] it names.
    if let Some(f) = get("sso_role_name").or_else(|| get("sso_account_id")) {
        let invalid = |message: String| {
            Failed(ChainError::InvalidConfig {
                message,
                at: Some(f.location()),
            })
        };
        let session = match get("sso_session") {
            None => None,
            Some(s) => match sso_session(&r.config, &s.entry.value) {
                Some(section) => Some(section),
                None => {
                    return invalid(format!(
                        "The specified sso-session does not exist: \"{}\"",
                        s.entry.value
                    ))
                }
            },
        };
        let missing: Vec<&str> = [
            "sso_role_name",
            "sso_account_id",
            "sso_start_url",
            "sso_region",
        ]
        .into_iter()
        .filter(|k| get(k).is_none() && session.is_none_or(|s| s.get(k).is_none()))
        .collect();
        if !missing.is_empty() {
            return invalid(format!(
                "The profile \"{}\" is configured to use SSO but is missing required configuration: {}",
                r.profile_name(),
                missing.join(", ")
            ));
        }
        return deferred(Provider::Sso, f);
    }
    // shared credentials file: the section named exactly like the profile.
    if let (Some(s), Some(f)) = (view.credentials, r.credentials.ini()) {
        if let Some(c) = static_from(f, s, Provider::SharedCredentialsFile) {
            return c;
        }
    }
    if let Some(f) = get("login_session") {
        return deferred(Provider::Login, f);
    }
    if let Some(f) = get("credential_process") {
        return deferred(Provider::CustomProcess, f);
    }
    if let (Some(s), Some(f)) = (view.config, r.config.ini()) {
        if let Some(c) = static_from(f, s, Provider::ConfigFile) {
            return c;
        }
    }
    if r.cli == CliVersion::V1 {
        if let Some(p) = env.var("AWS_CREDENTIAL_FILE") {
            let path = expand_path(&p, env);
            match std::fs::read(&path) {
                Err(_) => return Failed(ChainError::LegacyFileMissing { path }),
                Ok(bytes) => {
                    if let Some(c) = legacy_credential_file(&path, &bytes) {
                        return c;
                    }
                }
            }
        }
        if let Some(c) = boto_config(env) {
            return c;
        }
    }
    for var in [
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        // botocore: set at all (`in environ`), even empty.
        if env_value(env, var).is_some() {
            return Deferred {
                provider: Provider::ContainerRole,
                trigger: Source::env(var),
            };
        }
    }
    if !imds_disabled(env) {
        return Deferred {
            provider: Provider::IamRole,
            trigger: Source::Default,
        };
    }
    Failed(ChainError::NoCredentials)
}

fn secret_of(s: Sourced<String>) -> Sourced<Secret> {
    Sourced {
        value: Secret(s.value),
        source: s.source,
    }
}

/// Static keys from one section (botocore's `SharedCredentialProvider` / `ConfigProvider`).
fn static_from(f: &IniFile, s: &Section, provider: Provider) -> Option<ChainOutcome> {
    let sourced = |e: &Entry| Sourced {
        value: e.value.clone(),
        source: Source::file(&f.path, e.value_pos),
    };
    let key = f.lookup(s, "aws_access_key_id")?;
    let Some(secret) = f.lookup(s, "aws_secret_access_key") else {
        return Some(ChainOutcome::Failed(ChainError::Partial {
            provider,
            missing: "aws_secret_access_key".into(),
        }));
    };
    let token = ["aws_security_token", "aws_session_token"]
        .iter()
        .find_map(|k| f.lookup(s, k));
    Some(ChainOutcome::Static(Box::new(ResolvedCredentials {
        provider,
        access_key_id: sourced(key),
        secret_access_key: secret_of(sourced(secret)),
        session_token: token.map(|t| secret_of(sourced(t))),
        expiration: None,
        account_id: f.lookup(s, "aws_account_id").map(sourced),
    })))
}

/// botocore's `parse_key_val_file` + `OriginalEC2Provider`.
fn legacy_credential_file(path: &Path, bytes: &[u8]) -> Option<ChainOutcome> {
    let text = String::from_utf8_lossy(bytes);
    let mut key = None;
    let mut secret = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((k, v)) = line.split_once('=') {
            let pos = ini::Pos {
                line: i as u32 + 1,
                col: 1,
            };
            let sv = Sourced {
                value: ini::py_strip(v).to_string(),
                source: Source::file(path, pos),
            };
            match ini::py_strip(k) {
                "AWSAccessKeyId" => key = Some(sv),
                "AWSSecretKey" => secret = Some(sv),
                _ => {}
            }
        }
    }
    let key = key?;
    let Some(secret) = secret else {
        return Some(ChainOutcome::Failed(ChainError::Partial {
            provider: Provider::Ec2CredentialsFile,
            missing: "AWSSecretKey".into(),
        }));
    };
    Some(ChainOutcome::Static(Box::new(ResolvedCredentials {
        provider: Provider::Ec2CredentialsFile,
        access_key_id: key,
        secret_access_key: secret_of(secret),
        session_token: None,
        expiration: None,
        account_id: None,
    })))
}

/// boto2's config files (`BOTO_CONFIG`, else `/etc/boto.cfg` and `~/.boto`).
fn boto_config(env: &dyn Environment) -> Option<ChainOutcome> {
    let paths: Vec<PathBuf> = match env.var("BOTO_CONFIG") {
        Some(p) => vec![expand_path(&p, env)],
        None => vec![PathBuf::from("/etc/boto.cfg"), expand_path("~/.boto", env)],
    };
    for path in paths {
        if !path.is_file() {
            continue;
        }
        let f = ini::parse(&path, &std::fs::read(&path).unwrap_or_default());
        if f.botocore_fails() {
            return Some(ChainOutcome::Failed(ChainError::ParseError { path }));
        }
        if let Some(s) = f.section("Credentials") {
            if let Some(c) = static_from(&f, s, Provider::BotoConfig) {
                return Some(match c {
                    ChainOutcome::Static(mut c) => {
                        c.session_token = None;
                        c.account_id = None;
                        ChainOutcome::Static(c)
                    }
                    other => other,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_like_python() {
        assert_eq!(
            shlex_split("profile \"b c\"").unwrap(),
            vec!["profile", "b c"]
        );
        assert_eq!(shlex_split("profile d e").unwrap().len(), 3);
        assert!(shlex_split("profile 'x").is_none());
        assert_eq!(
            shlex_split("profile a\\ b").unwrap(),
            vec!["profile", "a b"]
        );
    }

    #[test]
    fn masks_like_the_cli() {
        assert_eq!(
            mask("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "****************EKEY"
        );
        assert_eq!(mask("short"), "****************");
        assert_eq!(mask("AKIAIOSFODNN7EXAMPL\r"), "****************MPL\\r");
    }
}
