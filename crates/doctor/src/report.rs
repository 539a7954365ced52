//! The doctor's report: the `aws configure list`-style table with sources, and findings; as text for
//! people or as one JSON object.

use std::io::{self, Write};

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::probe::Identity;
use crate::resolve::{
    mask, ChainError, ChainOutcome, CliVersion, FileState, Resolution, SharedFile, Source,
};

/// One row of the table (`aws configure list` rows plus token, endpoint and the two files).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `profile`, `access_key`, `secret_key`, `token`, `region`, `endpoint`, `config_file`,
    /// `credentials_file`.
    pub name: &'static str,
    /// The value (secrets and key ids masked), or `None` when not set.
    pub value: Option<String>,
    /// The CLI's Type column (`env`, `shared-credentials-file`, `config-file`, `manual`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Where the value came from.
    pub source: Option<Source>,
}

/// The `credentials` member of the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialsReport {
    /// The provider the chain ends with, when one is known.
    pub provider: Option<&'static str>,
    /// `resolved` (static keys, inspected), `deferred` (fetched at run time), or `failed`.
    pub status: &'static str,
    /// What the CLI would say when it fails.
    pub error: Option<String>,
    /// The values and their sources.
    pub values: Vec<Row>,
}

/// The whole report (`--json` prints it as is).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The CLI whose rules were applied.
    pub cli: CliVersion,
    /// Resolved values with their sources, masked.
    pub credentials: CredentialsReport,
    /// Who AWS says the credentials are; `null` unless the live probe succeeded.
    pub identity: Option<Identity>,
    /// The live probe: where it went and what it measured; `null` when it did not run.
    pub probe: Option<ProbeSummary>,
    /// Findings, errors first.
    pub findings: Vec<Finding>,
}

/// What the live probe did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbeSummary {
    /// The STS endpoint called.
    pub endpoint: String,
    /// Local minus server clock in seconds, when the server said its time.
    pub clock_skew_seconds: Option<i64>,
}

impl Report {
    /// True when any finding is an error (exit code 1).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// What the CLI prints when the chain fails.
pub(crate) fn chain_error_message(e: &ChainError) -> String {
    match e {
        ChainError::ParseError { path } => {
            format!("Unable to parse config file: {}", path.display())
        }
        ChainError::ProfileNotFound { name } => {
            format!("The config profile ({name}) could not be found")
        }
        ChainError::Partial { provider, missing } => {
            format!(
                "Partial credentials found in {}, missing: {missing}",
                provider.method()
            )
        }
        ChainError::NoCredentials => "Unable to locate credentials".into(),
        ChainError::LegacyFileMissing { path } => {
            format!("Config file {} could not be found", path.display())
        }
        ChainError::InvalidConfig { message, .. }
        | ChainError::InfiniteLoop { message, .. }
        | ChainError::CredentialRetrieval { message, .. } => message.clone(),
    }
}

/// Builds the rows and the credentials summary from a resolution.
pub(crate) fn credentials_report(r: &Resolution) -> CredentialsReport {
    let mut rows = Vec::new();
    let type_of = |s: &Source| match s {
        Source::Env { .. } => "env".to_string(),
        Source::Flag { .. } => "manual".to_string(),
        Source::Default => "default".to_string(),
        Source::File { location } => {
            if location.path == r.credentials.path {
                "shared-credentials-file".into()
            } else if location.path == r.config.path {
                "config-file".into()
            } else {
                "file".into()
            }
        }
    };
    rows.push(Row {
        name: "profile",
        value: r.profile.as_ref().map(|p| p.value.clone()),
        kind: r.profile.as_ref().map(|p| match &p.source {
            Source::Flag { .. } => "manual".to_string(),
            Source::Env { var } => format!("env ({var})"),
            s => type_of(s),
        }),
        source: r.profile.as_ref().map(|p| p.source.clone()),
    });
    let (provider, status, error) = match &r.outcome {
        ChainOutcome::Static(c) => {
            let method = c.provider.method().to_string();
            rows.push(Row {
                name: "access_key",
                value: Some(mask(&c.access_key_id.value)),
                kind: Some(method.clone()),
                source: Some(c.access_key_id.source.clone()),
            });
            rows.push(Row {
                name: "secret_key",
                value: Some(c.secret_access_key.value.masked()),
                kind: Some(method.clone()),
                source: Some(c.secret_access_key.source.clone()),
            });
            rows.push(Row {
                name: "token",
                value: c.session_token.as_ref().map(|t| t.value.masked()),
                kind: c.session_token.as_ref().map(|_| method.clone()),
                source: c.session_token.as_ref().map(|t| t.source.clone()),
            });
            (Some(c.provider.method()), "resolved", None)
        }
        ChainOutcome::Deferred { provider, trigger } => {
            for name in ["access_key", "secret_key"] {
                rows.push(Row {
                    name,
                    value: None,
                    kind: Some(provider.method().to_string()),
                    source: Some(trigger.clone()),
                });
            }
            (Some(provider.method()), "deferred", None)
        }
        ChainOutcome::Failed(e) => {
            for name in ["access_key", "secret_key"] {
                rows.push(Row {
                    name,
                    value: None,
                    kind: None,
                    source: None,
                });
            }
            (None, "failed", Some(chain_error_message(e)))
        }
    };
    rows.push(Row {
        name: "region",
        value: r.region.as_ref().map(|s| s.value.clone()),
        kind: r.region.as_ref().map(|s| type_of(&s.source)),
        source: r.region.as_ref().map(|s| s.source.clone()),
    });
    rows.push(Row {
        name: "endpoint",
        value: Some(r.endpoint.url.clone()),
        kind: Some(type_of(&r.endpoint.source)),
        source: Some(r.endpoint.source.clone()),
    });
    for (name, f) in [
        ("config_file", &r.config),
        ("credentials_file", &r.credentials),
    ] {
        rows.push(file_row(name, f));
    }
    CredentialsReport {
        provider,
        status,
        error,
        values: rows,
    }
}

fn file_row(name: &'static str, f: &SharedFile) -> Row {
    let state = match &f.state {
        FileState::Missing => "missing",
        FileState::Unreadable(_) => "unreadable",
        FileState::Parsed(i) if i.botocore_fails() => "unparsable",
        FileState::Parsed(_) => "ok",
    };
    Row {
        name,
        value: Some(f.path.display().to_string()),
        kind: Some(state.to_string()),
        source: Some(f.path_source.clone()),
    }
}

/// Terminal styling (ANSI), or none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Style {
    /// Use colours.
    pub(crate) color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Writes the report for people.
pub(crate) fn write_text(report: &Report, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let rows = &report.credentials.values;
    let main_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| !matches!(r.name, "config_file" | "credentials_file"))
        .collect();
    writeln!(
        out,
        "{:>10} {:>24} {:>24}    Location",
        "Name", "Value", "Type"
    )?;
    writeln!(
        out,
        "{:>10} {:>24} {:>24}    --------",
        "----", "-----", "----"
    )?;
    for r in &main_rows {
        let location = match &r.source {
            None => "None".to_string(),
            Some(Source::Env { var }) => var.clone(),
            Some(Source::File { location }) => location.to_string(),
            Some(Source::Flag { flag }) => flag.clone(),
            Some(Source::Default) => "default".to_string(),
        };
        writeln!(
            out,
            "{:>10} {:>24} {:>24}    {}",
            r.name,
            // Shown escaped: a value holding a newline or an invisible character (a nested block
            // read as a region, a stray control character) must not break or hide in the table.
            r.value
                .as_deref()
                .map_or_else(|| "<not set>".to_string(), crate::ini::escape),
            r.kind.as_deref().unwrap_or("None"),
            location
        )?;
    }
    if let Some(id) = &report.identity {
        writeln!(
            out,
            "\n{:>10} {}  (account {}, user id {})",
            "identity", id.arn, id.account, id.user_id
        )?;
    }
    if let Some(p) = &report.probe {
        let skew = match p.clock_skew_seconds {
            Some(s) => format!(", clock {}", describe_skew(s)),
            None => String::new(),
        };
        writeln!(
            out,
            "{}{:>10} sts:GetCallerIdentity at {}{skew}",
            if report.identity.is_some() { "" } else { "\n" },
            "probe",
            p.endpoint
        )?;
    }
    if let Some(e) = &report.credentials.error {
        writeln!(
            out,
            "\nThe AWS CLI ({}) would fail with: {e}",
            cli_name(report.cli)
        )?;
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if errors == 0 && warnings == 0 {
        let mut line = "\nNo problems found.".to_string();
        if let Some(p) = report.credentials.provider {
            line = format!("\nNo problems found (credentials from {p}).");
        }
        writeln!(out, "{}", style.paint("32", &line))?;
        for f in report.findings.iter() {
            writeln!(
                out,
                "  {} {}: {}",
                style.paint("36", "i"),
                f.code,
                f.message
            )?;
        }
        return Ok(());
    }
    for (sev, title, colour, mark) in [
        (Severity::Error, "Errors", "31", "x"),
        (Severity::Warning, "Warnings", "33", "!"),
        (Severity::Info, "Info", "36", "i"),
    ] {
        let list: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.severity == sev)
            .collect();
        if list.is_empty() {
            continue;
        }
        writeln!(
            out,
            "\n{}",
            style.paint(&format!("1;{colour}"), &format!("{title} ({})", list.len()))
        )?;
        for f in list {
            writeln!(
                out,
                "  {} [{}] {}",
                style.paint(colour, mark),
                f.code,
                f.message
            )?;
            if let Some(l) = &f.location {
                writeln!(out, "      at  {l}")?;
            }
            writeln!(out, "      fix {}", f.fix)?;
        }
    }
    writeln!(
        out,
        "\n{} error(s), {} warning(s). `keyward explain CODE` says more about any AWS error.",
        errors, warnings
    )?;
    Ok(())
}

/// "in step with the server", "42 s ahead of the server", "2 h 0 min behind the server".
pub(crate) fn describe_skew(s: i64) -> String {
    let a = s.unsigned_abs();
    let amount = if a >= 3600 {
        format!("{} h {} min", a / 3600, (a % 3600) / 60)
    } else if a >= 120 {
        format!("{} min {} s", a / 60, a % 60)
    } else {
        format!("{a} s")
    };
    match s {
        -1..=1 => "in step with the server".to_string(),
        s if s > 0 => format!("{amount} ahead of the server"),
        _ => format!("{amount} behind the server"),
    }
}

fn cli_name(c: CliVersion) -> &'static str {
    match c {
        CliVersion::V1 => "v1",
        CliVersion::V2 => "v2",
    }
}
