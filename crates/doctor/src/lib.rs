//! keyward-doctor: why AWS credentials fail, found offline with file, line and column.
//!
//! * `keyward doctor`: resolves credentials exactly as the AWS CLI (botocore) does, shows every value
//!   with its source, and reports findings with stable codes ([`Code`]). The live half (a signed STS
//!   call) plugs in through [`Prober`].
//! * `keyward explain`: a catalogue of AWS authentication errors ([`explain`]).
//!
//! The binary calls [`run_doctor`] and [`run_explain`] with the clap [`DoctorArgs`] / [`ExplainArgs`].
#![forbid(unsafe_code)]

pub mod aws;
mod checks;
mod env;
pub mod explain;
mod finding;
pub mod ini;
mod probe;
mod report;
mod resolve;
mod rotate;

use std::io::Write;

pub use env::{Environment, SystemEnvironment};
pub use explain::{run_explain, ExplainArgs};
pub use finding::{Code, Finding, Location, Severity};
pub use probe::{Identity, LiveProber, NotBuiltProber, ProbeOutcome, Prober};
pub use report::{CredentialsReport, ProbeSummary, Report, Row};
pub use resolve::{
    config_profile_names, default_sts_endpoint, mask, resolve, ChainError, ChainOutcome,
    CliVersion, Endpoint, FileState, Provider, Request, Resolution, ResolvedCredentials, Secret,
    SharedFile, Source, Sourced,
};
pub use rotate::{run_rotate, run_rotate_with, Confirm, RotateArgs, TerminalConfirm};

/// `keyward doctor`: check the AWS credentials this shell would use.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DoctorArgs {
    /// Check this profile, as `aws --profile` would (which also makes the CLI ignore env keys).
    #[arg(long)]
    pub profile: Option<String>,
    /// The endpoint to send the live probe to, as `aws --endpoint-url`.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The region, as `aws --region`.
    #[arg(long)]
    pub region: Option<String>,
    /// Do not contact any endpoint: file, environment and format checks only.
    #[arg(long)]
    pub offline: bool,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Follow the rules of this AWS CLI major version.
    #[arg(long, value_enum, default_value_t = CliVersion::V2)]
    pub cli: CliVersion,
}

/// Exit code: nothing wrong.
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one error finding (or, for explain, an unknown code).
pub const EXIT_FINDING: i32 = 1;
/// Exit code: the command was misused.
pub const EXIT_MISUSE: i32 = 2;

/// Resolves, checks, optionally probes, and returns the report (no output).
pub fn diagnose(args: &DoctorArgs, env: &dyn Environment, prober: Option<&dyn Prober>) -> Report {
    let req = Request {
        profile: args.profile.clone(),
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        cli: args.cli,
    };
    let resolution = resolve::resolve(&req, env);
    let mut findings = checks::offline_findings(&resolution, env);
    let mut identity = None;
    let mut probe = None;
    if let (Some(prober), ChainOutcome::Static(c)) = (prober, &resolution.outcome) {
        let region = resolution.region.as_ref().map(|r| r.value.as_str());
        let mut summary = ProbeSummary {
            endpoint: resolution.endpoint.url.clone(),
            clock_skew_seconds: None,
        };
        let mut ran = true;
        for outcome in prober.probe_all(c, &resolution.endpoint, region) {
            match &outcome {
                ProbeOutcome::ClockSkew { skew_seconds } => {
                    summary.clock_skew_seconds = Some(*skew_seconds)
                }
                ProbeOutcome::Unavailable { .. } => ran = false,
                _ => {}
            }
            apply_probe(outcome, &resolution, &mut findings, &mut identity);
        }
        if let Some(id) = &identity {
            live_account_check(id, c, &resolution, &mut findings);
        }
        probe = ran.then_some(summary);
    }
    findings.sort_by_key(|f| f.severity);
    Report {
        cli: args.cli,
        credentials: report::credentials_report(&resolution),
        identity,
        probe,
        findings,
    }
}

/// AWS names the account; when the configuration states another one and the offline check (which
/// decodes the key id) did not already say so, report it.
fn live_account_check(
    id: &Identity,
    c: &ResolvedCredentials,
    r: &Resolution,
    findings: &mut Vec<Finding>,
) {
    if findings.iter().any(|f| f.code == Code::AccountMismatch) {
        return;
    }
    // As the provider that supplied the keys states it (see the offline check).
    let expected = c.account_id.clone();
    if let Some(expected) = expected {
        if expected.value.trim() != id.account {
            findings.push(
                Finding::new(
                    Code::AccountMismatch,
                    Severity::Error,
                    format!(
                        "{} says the key belongs to account {}, but {} says {}.",
                        r.endpoint.url, id.account, expected.source, expected.value
                    ),
                    format!(
                        "use the key of account {} or correct the account id ({})",
                        expected.value, expected.source
                    ),
                )
                .at(expected.source.location().cloned()),
            );
        }
    }
}

/// Clock skew below this is not worth a finding (AWS allows 15 minutes; warn well before).
pub const SKEW_WARN_SECONDS: i64 = 300;
/// Clock skew from which AWS refuses signed requests.
pub const SKEW_ERROR_SECONDS: i64 = 900;

fn apply_probe(
    outcome: ProbeOutcome,
    r: &Resolution,
    findings: &mut Vec<Finding>,
    identity: &mut Option<Identity>,
) {
    let url = &r.endpoint.url;
    match outcome {
        ProbeOutcome::Identity(id) => *identity = Some(id),
        ProbeOutcome::Rejected {
            code,
            aws_error,
            message,
        } => {
            let key = match &r.outcome {
                ChainOutcome::Static(c) => c.access_key_id.value.clone(),
                _ => String::new(),
            };
            let meaning = match code {
                Code::KeyUnknown => format!(
                    " The key {key} is not known there: deleted, deactivated, never existed, or it belongs to another partition or endpoint (a real AWS key sent to an emulator, or the reverse)."
                ),
                Code::SignatureMismatch => format!(
                    " The key id {key} is known, so the secret is wrong: mistyped, truncated, with a stray character, or the secret of another key."
                ),
                Code::TokenExpired => " The session token has expired: get new temporary credentials.".to_string(),
                _ => String::new(),
            };
            let fix = match code {
                Code::KeyUnknown => format!("if it was only deactivated, reactivate it with other credentials (aws iam update-access-key --access-key-id {key} --status Active); otherwise create a new key and put it in the profile; or point at the right endpoint   # details: keyward explain {aws_error}"),
                Code::SignatureMismatch => format!("copy the secret again from where the key was created (it cannot be shown again; if lost, create a new key)   # details: keyward explain {aws_error}"),
                Code::TokenExpired => format!("refresh the session (aws sts get-session-token / aws sso login / re-assume the role)   # details: keyward explain {aws_error}"),
                _ => format!("keyward explain {aws_error}"),
            };
            findings.push(Finding::new(
                code,
                Severity::Error,
                format!("{url} answered {aws_error}: {message}{meaning}"),
                fix,
            ))
        }
        ProbeOutcome::ClockSkew { skew_seconds } => {
            let abs = skew_seconds.unsigned_abs();
            if abs < SKEW_WARN_SECONDS as u64 {
                return;
            }
            let (severity, consequence) = if abs >= SKEW_ERROR_SECONDS as u64 {
                (Severity::Error, "AWS refuses signed requests more than 15 minutes off (\"Signature expired\" / \"Signature not yet current\")")
            } else {
                (Severity::Warning, "AWS still accepts requests up to 15 minutes off, but a little more drift breaks every call")
            };
            findings.push(Finding::new(
                Code::ClockSkew,
                severity,
                format!(
                    "the local clock is {} (measured against {url}); {consequence}.",
                    report::describe_skew(skew_seconds)
                ),
                "sudo chronyc makestep   # or: sudo timedatectl set-ntp true; on WSL2: wsl --shutdown",
            ))
        }
        ProbeOutcome::Unreachable { reason } => findings.push(Finding::new(
            Code::EndpointUnreachable,
            Severity::Error,
            format!("{url} could not be reached: {reason}"),
            "check the endpoint URL, proxy variables (HTTPS_PROXY) and network",
        )),
        ProbeOutcome::Unavailable { reason } => findings.push(Finding::new(
            Code::ProbeUnavailable,
            Severity::Info,
            format!("{reason}; only the offline checks ran (the probe would call {url})."),
            "keyward doctor --offline   # runs the same checks without this note",
        )),
    }
}

/// Runs `keyward doctor`: writes the report (or JSON) to `out`, returns the exit code.
pub fn run_doctor(args: &DoctorArgs, env: &dyn Environment, out: &mut dyn Write) -> i32 {
    if let Some(url) = &args.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let _ = writeln!(
                out,
                "error: --endpoint-url must start with http:// or https:// (got {url:?})"
            );
            return EXIT_MISUSE;
        }
    }
    if args.profile.as_deref() == Some("") {
        let _ = writeln!(out, "error: --profile needs a name");
        return EXIT_MISUSE;
    }
    let prober = LiveProber;
    let report = diagnose(args, env, (!args.offline).then_some(&prober as &dyn Prober));
    let written = if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        let color = env.stdout_is_terminal() && env.var("NO_COLOR").is_none_or(|v| v.is_empty());
        report::write_text(&report, report::Style { color }, out)
    };
    if written.is_err() {
        return EXIT_MISUSE;
    }
    if report.has_errors() {
        EXIT_FINDING
    } else {
        EXIT_OK
    }
}

/// Levenshtein distance between two strings (case-insensitive).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidates within `max` edits of `word`, closest first.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= max)
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().map(|(_, c)| c.to_string()).collect()
}
