//! keyward-doctor: why AWS credentials fail, found offline with file, line and column.
//!
//! * `keyward doctor`: resolves credentials exactly as the AWS CLI (botocore) does, shows every value
//!   with its source, and reports findings with stable codes ([`Code`]). The live half (a signed STS
//!   call) plugs in through [`Prober`].
//! * `keyward explain`: a catalogue of AWS authentication errors ([`explain`]).
//!
//! The binary calls [`run_doctor`] and [`run_explain`] with the clap [`DoctorArgs`] / [`ExplainArgs`].
#![forbid(unsafe_code)]

mod checks;
mod env;
pub mod explain;
mod finding;
pub mod ini;
mod probe;
mod report;
mod resolve;

use std::io::Write;

pub use env::{Environment, SystemEnvironment};
pub use explain::{run_explain, ExplainArgs};
pub use finding::{Code, Finding, Location, Severity};
pub use probe::{Identity, NotBuiltProber, ProbeOutcome, Prober};
pub use report::{CredentialsReport, Report, Row};
pub use resolve::{
    config_profile_names, default_sts_endpoint, mask, resolve, ChainError, ChainOutcome,
    CliVersion, Endpoint, FileState, Provider, Request, Resolution, ResolvedCredentials, Secret,
    SharedFile, Source, Sourced,
};

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
    if let Some(prober) = prober {
        let outcome = match &resolution.outcome {
            ChainOutcome::Static(c) => Some(prober.probe(c, &resolution.endpoint)),
            _ => None,
        };
        if let Some(outcome) = outcome {
            apply_probe(outcome, &resolution, &mut findings, &mut identity);
        }
    }
    findings.sort_by_key(|f| f.severity);
    Report {
        cli: args.cli,
        credentials: report::credentials_report(&resolution),
        identity,
        findings,
    }
}

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
        } => findings.push(Finding::new(
            code,
            Severity::Error,
            format!("{url} answered {aws_error}: {message}"),
            format!("keyward explain {aws_error}"),
        )),
        ProbeOutcome::ClockSkew { skew_seconds } => findings.push(Finding::new(
            Code::ClockSkew,
            Severity::Error,
            format!("the local clock is {skew_seconds} s off the server's; AWS allows 5 minutes (15 for some services)."),
            "sudo chronyc makestep   # or: sudo timedatectl set-ntp true; on WSL2: wsl --shutdown",
        )),
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
    let prober = NotBuiltProber;
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
