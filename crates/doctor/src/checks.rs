//! The offline checks: from a [`Resolution`] to findings.

use std::time::UNIX_EPOCH;

use keyward_ids::{account_of_key_id, is_well_formed_secret, key_kind, KeyKind};

use crate::env::Environment;
use crate::finding::{Code, Finding, Location, Severity};
use crate::ini::{self, Entry, IniFile, ProblemKind};
use crate::resolve::{
    all_profiles, mask, shlex_split, ChainError, ChainOutcome, FileState, Provider, Resolution,
    ResolvedCredentials, SharedFile, Source,
};

/// Options botocore and the CLI use as plain strings: a nested block there (nothing after `=`,
/// indented `key = value` lines below) reaches them as a map, and the CLI fails on it.
const STRING_KEYS: &[&str] = &[
    "region",
    "output",
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "role_session_name",
    "external_id",
    "mfa_serial",
    "duration_seconds",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
    "sso_region",
    "sso_account_id",
    "sso_role_name",
    "endpoint_url",
    "ca_bundle",
];

/// Keys that hold key material.
const CREDENTIAL_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_security_token",
];

/// Keys that third-party tools write for the expiry of temporary credentials.
const EXPIRY_KEYS: &[&str] = &[
    "aws_credential_expiration",
    "aws_expiration",
    "expiration",
    "x_security_token_expires",
];

/// Common wrong spellings, with the key botocore reads.
const MISSPELLINGS: &[(&str, &str)] = &[
    ("aws_access_key", "aws_access_key_id"),
    ("aws_secret_key", "aws_secret_access_key"),
    ("aws_secret_key_id", "aws_secret_access_key"),
    ("aws_secret_access_key_id", "aws_secret_access_key"),
    ("aws_secret_access", "aws_secret_access_key"),
    ("access_key_id", "aws_access_key_id"),
    ("access_key", "aws_access_key_id"),
    ("secret_access_key", "aws_secret_access_key"),
    ("secret_key", "aws_secret_access_key"),
    ("session_token", "aws_session_token"),
    ("aws_token", "aws_session_token"),
    ("aws_session_key", "aws_session_token"),
    ("token", "aws_session_token"),
    ("awsaccesskeyid", "aws_access_key_id"),
    ("awssecretkey", "aws_secret_access_key"),
    ("awssecretaccesskey", "aws_secret_access_key"),
    ("aws_region", "region"),
    ("region_name", "region"),
    ("default_region", "region"),
    ("aws_default_region", "region"),
    ("aws_profile", "source_profile"),
];

/// Everything the doctor checks offline, in a stable order.
pub(crate) fn offline_findings(r: &Resolution, env: &dyn Environment) -> Vec<Finding> {
    let mut out = Vec::new();
    for (f, is_creds) in [(&r.credentials, true), (&r.config, false)] {
        file_findings(f, is_creds, &mut out);
    }
    if let Some(cfg) = r.config.ini() {
        config_sections(cfg, &mut out);
    }
    if let Some(creds) = r.credentials.ini() {
        credentials_sections(creds, &mut out);
    }
    profile_selection(r, &mut out);
    chain_findings(r, env, &mut out);
    if let ChainOutcome::Static(c) = &r.outcome {
        credential_findings(r, c, env, &mut out);
    }
    region_findings(r, &mut out);
    if r.endpoint.source != Source::Default {
        let loc = r.endpoint.source.location().cloned();
        out.push(
            Finding::new(
                Code::EndpointOverride,
                Severity::Info,
                format!(
                    "STS requests go to {} (from {}), not to AWS's endpoint for the region ({}).",
                    r.endpoint.url,
                    r.endpoint.source,
                    crate::resolve::default_sts_endpoint(r.region.as_ref().map(|s| s.value.as_str()))
                ),
                match &r.endpoint.source {
                    Source::Env { var } => format!("unset {var}   # if you meant to talk to AWS itself"),
                    Source::Flag { .. } => "drop --endpoint-url to talk to AWS itself".to_string(),
                    _ => "remove the endpoint_url line (or the services section) if you meant AWS itself"
                        .to_string(),
                },
            )
            .at(loc),
        );
    }
    out
}

/// botocore's `validate_region_name`: a host label (letters, digits and `-`, at most 63, not all
/// digits, no `-` at either end). An empty name passes it.
fn is_region_name(r: &str) -> bool {
    r.len() <= 63
        && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !r.starts_with('-')
        && !r.ends_with('-')
        && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()))
}

/// A region the CLI cannot use: refused by its check, or empty (then it builds the endpoint
/// `https://sts..amazonaws.com`).
fn region_findings(r: &Resolution, out: &mut Vec<Finding>) {
    let Some(region) = &r.region else {
        // aws CLI v1 (botocore) signs for a region: with an endpoint URL and none set it stops
        // (without one, STS and IAM fall back to their global endpoints).
        if r.cli == crate::resolve::CliVersion::V1 && r.endpoint.source != Source::Default {
            out.push(
                Finding::new(
                    Code::InvalidRegion,
                    Severity::Error,
                    format!(
                        "no region is set, and the endpoint comes from {}: the CLI stops with \"You must specify a region. You can also configure your region by running \"aws configure\".\"",
                        r.endpoint.source
                    ),
                    format!(
                        "set one: aws configure set region us-east-1 --profile {}",
                        r.profile_name()
                    ),
                )
                .at(r.endpoint.source.location().cloned()),
            );
        }
        return;
    };
    let loc = region.source.location().cloned();
    if region.value.is_empty() {
        out.push(
            Finding::new(
                Code::InvalidRegion,
                Severity::Error,
                format!(
                    "the region is empty ({}): the CLI builds no valid endpoint from it (\"Invalid endpoint: https://sts..amazonaws.com\").",
                    region.source
                ),
                "set a region (e.g. us-east-1) or remove the empty setting",
            )
            .at(loc),
        );
    } else if !is_region_name(&region.value) {
        out.push(
            Finding::new(
                Code::InvalidRegion,
                Severity::Error,
                format!(
                    "the region '{}' ({}) is not a region name: the CLI stops with \"Provided region_name '{}' doesn't match a supported format.\"",
                    crate::ini::escape(&region.value),
                    region.source,
                    region.value
                ),
                "write the region alone (e.g. us-west-2); a comment after it on the same line is part of the value",
            )
            .at(loc),
        );
    }
}

fn file_findings(f: &SharedFile, is_creds: bool, out: &mut Vec<Finding>) {
    let path = f.path.display().to_string();
    match &f.state {
        FileState::Missing => {}
        FileState::Unreadable(why) => out.push(Finding::new(
            Code::FileUnreadable,
            Severity::Warning,
            format!(
                "{path} exists but cannot be read ({why}); botocore silently treats it as empty."
            ),
            format!("sudo chown \"$USER\" '{path}' && chmod 600 '{path}'"),
        )),
        FileState::Parsed(ini) => {
            for p in &ini.problems {
                out.push(problem_finding(ini, p));
            }
            let has_secret = ini
                .sections
                .iter()
                .any(|s| s.get("aws_secret_access_key").is_some());
            if let Some(mode) = f.mode {
                if mode & 0o077 != 0 && (is_creds || has_secret) {
                    out.push(
                        Finding::new(
                            Code::FilePermissions,
                            Severity::Warning,
                            format!(
                                "{path} is readable by other users (mode {mode:04o}); it holds secret keys."
                            ),
                            format!("chmod 600 '{path}'"),
                        )
                        .at(Some(Location::new(&f.path, ini::Pos { line: 1, col: 1 }))),
                    );
                }
            }
            for s in &ini.sections {
                for e in &s.entries {
                    entry_findings(ini, &s.name, e, out);
                }
            }
            for e in &ini.defaults {
                entry_findings(ini, "DEFAULT", e, out);
            }
        }
    }
}

/// A line of a file, safe to print: values are masked, and a long bare word (a secret pasted on its own
/// line) is masked too.
fn safe_line(text: &str) -> String {
    match text.find(['=', ':']) {
        Some(i) => {
            let value = text[i + 1..].trim();
            if value.is_empty() {
                text.to_string()
            } else {
                format!("{} {}", &text[..=i], mask(value))
            }
        }
        None if text.trim().chars().count() >= 12 => mask(text.trim()),
        None => text.to_string(),
    }
}

fn problem_finding(ini: &IniFile, p: &ini::Problem) -> Finding {
    let path = ini.path.display();
    let loc = Some(Location::new(&ini.path, p.pos));
    let tail =
        format!("botocore rejects the whole file (\"Unable to parse config file: {path}\").");
    let (code, message, fix) = match &p.kind {
        ProblemKind::Bom => (
            Code::Bom,
            format!("{path} starts with a UTF-8 byte order mark, so the first section header is not recognised; {tail}"),
            format!("sed -i '1s/^\\xEF\\xBB\\xBF//' '{path}'"),
        ),
        ProblemKind::NotUtf8 { utf16: true } => (
            Code::NotUtf8,
            format!("{path} is UTF-16 encoded (Windows editors do this); {tail}"),
            format!("iconv -f UTF-16 -t UTF-8 '{path}' > '{path}.utf8' && mv '{path}.utf8' '{path}'"),
        ),
        ProblemKind::NotUtf8 { utf16: false } => (
            Code::NotUtf8,
            format!("{path} is not valid UTF-8 at line {} column {}; {tail}", p.pos.line, p.pos.col),
            format!("retype line {} of '{path}' with plain ASCII characters", p.pos.line),
        ),
        ProblemKind::NoSectionHeader => (
            Code::NoSectionHeader,
            format!("line {} (`{}`) comes before any [section] header; {tail}", p.pos.line, safe_line(&p.line_text)),
            format!("add a header such as [default] above line {} of '{path}', or delete the line", p.pos.line),
        ),
        ProblemKind::DuplicateSection { name, first } => (
            Code::DuplicateSection,
            format!("section [{name}] appears twice (lines {} and {}); {tail}", first.line, p.pos.line),
            format!("merge the two [{name}] sections of '{path}' into one and delete line {}", p.pos.line),
        ),
        ProblemKind::DuplicateKey { section, key, first } => (
            Code::DuplicateKey,
            format!(
                "`{key}` is set twice in [{section}] (lines {} and {}); keys are case-insensitive; {tail}",
                first.line, p.pos.line
            ),
            format!("delete the stale one of lines {} and {} in '{path}'", first.line, p.pos.line),
        ),
        ProblemKind::InvalidLine => (
            Code::InvalidLine,
            format!("line {} (`{}`) is not `key = value`, a [section] or a comment; {tail}", p.pos.line, safe_line(&p.line_text)),
            format!("fix or delete line {} of '{path}' (comments start with # or ;)", p.pos.line),
        ),
        ProblemKind::BadNestedLine { section, key } => (
            Code::ContinuationLine,
            format!(
                "`{key}` in [{section}] has nothing after `=`, so its indented lines form a nested block, and line {} (`{}`) has no `=`; {tail}",
                p.pos.line, safe_line(&p.line_text)
            ),
            format!("put the value on the same line as `{key} =`, or un-indent line {} of '{path}'", p.pos.line),
        ),
    };
    Finding::new(code, Severity::Error, message, fix).at(loc)
}

/// Checks of one option: continuation lines, misspellings, hidden characters in key material.
fn entry_findings(ini: &IniFile, section: &str, e: &Entry, out: &mut Vec<Finding>) {
    let path = ini.path.display();
    let is_cred = CREDENTIAL_KEYS.contains(&e.key.as_str());
    if !e.continuation_lines.is_empty() && !e.is_nested() {
        let first = e.continuation_lines[0];
        out.push(
            Finding::new(
                Code::ContinuationLine,
                if is_cred { Severity::Error } else { Severity::Warning },
                format!(
                    "line {first} is indented, so botocore joins it to `{}` of [{section}] (line {}): the value now spans {} lines.",
                    e.key,
                    e.key_pos.line,
                    e.continuation_lines.len() + 1
                ),
                format!("remove the leading whitespace on line {first} of '{path}'"),
            )
            .at(Some(Location::new(&ini.path, ini::Pos { line: first, col: 1 }))),
        );
    }
    if e.is_nested() && (is_cred || STRING_KEYS.contains(&e.key.as_str())) && e.nested().is_ok() {
        let first = e
            .continuation_lines
            .first()
            .copied()
            .unwrap_or(e.key_pos.line + 1);
        out.push(
            Finding::new(
                Code::ContinuationLine,
                Severity::Error,
                format!(
                    "`{}` in [{section}] (line {}) has nothing after `=` and indented `key = value` lines below it: botocore reads it as a nested block, a map instead of a value, and the CLI fails with a type error when it uses `{}`.",
                    e.key, e.key_pos.line, e.key
                ),
                format!(
                    "put the value on line {} after `{} =`, and remove the indented lines below it in '{path}'",
                    e.key_pos.line, e.raw_key
                ),
            )
            .at(Some(Location::new(&ini.path, ini::Pos { line: first, col: 1 }))),
        );
    }
    if let Some((_, right)) = MISSPELLINGS.iter().find(|(w, _)| *w == e.key) {
        out.push(
            Finding::new(
                Code::MisspelledKey,
                Severity::Warning,
                format!(
                    "`{}` in [{section}] is not a key botocore reads; did you mean `{right}`?",
                    e.raw_key
                ),
                format!(
                    "rename `{}` to `{right}` on line {} of '{path}'",
                    e.raw_key, e.key_pos.line
                ),
            )
            .at(Some(Location::new(&ini.path, e.key_pos))),
        );
    } else if !is_cred
        && e.key.contains('-')
        && CREDENTIAL_KEYS.contains(&e.key.replace('-', "_").as_str())
    {
        let right = e.key.replace('-', "_");
        out.push(
            Finding::new(
                Code::MisspelledKey,
                Severity::Warning,
                format!(
                    "`{}` in [{section}] uses dashes; botocore reads only `{right}`.",
                    e.raw_key
                ),
                format!(
                    "rename `{}` to `{right}` on line {} of '{path}'",
                    e.raw_key, e.key_pos.line
                ),
            )
            .at(Some(Location::new(&ini.path, e.key_pos))),
        );
    }
    if is_cred && e.continuation_lines.is_empty() {
        if let Some(h) = hidden(&e.value, true) {
            out.push(
                Finding::new(
                    Code::HiddenCharacters,
                    Severity::Error,
                    format!(
                        "`{}` in [{section}] contains {h}; botocore keeps it as part of the value.",
                        e.key
                    ),
                    format!(
                        "retype the value on line {} of '{path}' without it",
                        e.key_pos.line
                    ),
                )
                .at(Some(Location::new(&ini.path, e.value_pos))),
            );
        }
    }
}

/// Describes the first hidden or suspicious character in a credential value, or `None`.
/// `from_file`: leading/trailing whitespace cannot occur (configparser strips it).
fn hidden(v: &str, from_file: bool) -> Option<String> {
    let describe = |c: char| match c {
        '\r' => "a carriage return (CR, U+000D)".to_string(),
        '\t' => "a tab".to_string(),
        ' ' => "a space".to_string(),
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' => {
            format!("an invisible zero-width character (U+{:04X})", c as u32)
        }
        '\u{a0}' => "a non-breaking space (U+00A0)".to_string(),
        c if c.is_control() => format!("a control character (U+{:04X})", c as u32),
        c => format!("a non-ASCII character (U+{:04X})", c as u32),
    };
    let n = v.chars().count();
    if !from_file {
        if let Some(c) = v.chars().next().filter(|c| c.is_whitespace()) {
            return Some(format!("leading whitespace: {}", describe(c)));
        }
        if let Some(c) = v.chars().last().filter(|c| c.is_whitespace()) {
            return Some(format!(
                "trailing whitespace: {} at character {n}",
                describe(c)
            ));
        }
    }
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        return Some("surrounding quotes (they are kept literally)".to_string());
    }
    let chars: Vec<char> = v.chars().collect();
    for (i, c) in chars.iter().copied().enumerate() {
        if c == '"' || c == '\'' {
            return Some(format!("a quote character at character {}", i + 1));
        }
        if (c == '#' || c == ';') && i > 0 && chars[i - 1].is_whitespace() {
            return Some(format!(
                "what looks like an inline comment at character {} (`{c}` after a space is part of the value)",
                i + 1
            ));
        }
    }
    for (i, c) in chars.into_iter().enumerate() {
        if !c.is_ascii_graphic() {
            return Some(format!("{} at character {}", describe(c), i + 1));
        }
    }
    None
}

fn config_sections(cfg: &IniFile, out: &mut Vec<Finding>) {
    let path = cfg.path.display();
    let mut default_plain = None;
    let mut default_profile = None;
    for s in &cfg.sections {
        let loc = Some(Location::new(&cfg.path, s.pos));
        if s.name == "default" {
            default_plain = Some(s);
            continue;
        }
        if s.name.starts_with("sso-session") || s.name.starts_with("services") {
            continue;
        }
        if s.name.starts_with("profile") {
            match shlex_split(&s.name) {
                Some(parts) if parts.len() == 2 && parts[0] == "profile" => {
                    if parts[1] == "default" {
                        default_profile = Some(s);
                    }
                    if parts[1] != "default" && parts[1].eq_ignore_ascii_case("default") {
                        out.push(section_case_finding(cfg, s, &parts[1]));
                    }
                }
                _ => {
                    let what = if s.name.starts_with("profile ") || s.name.starts_with("profile\t")
                    {
                        "does not split into `profile` and one name (quote a name with spaces: [profile \"a b\"])"
                    } else {
                        "has no space after `profile`"
                    };
                    out.push(
                        Finding::new(
                            Code::SectionName,
                            Severity::Warning,
                            format!("[{}] {what}; botocore ignores the whole section.", s.name),
                            format!("rename the header on line {} of '{path}'", s.pos.line),
                        )
                        .at(loc),
                    );
                }
            }
            continue;
        }
        if s.name.eq_ignore_ascii_case("default") || py_trim_differs(&s.name) {
            out.push(section_case_finding(cfg, s, &s.name));
            continue;
        }
        if looks_like_profile(s) {
            out.push(
                Finding::new(
                    Code::SectionName,
                    Severity::Warning,
                    format!(
                        "[{}] in the config file is not a profile: there profiles are [profile NAME] (only [default] is bare); botocore ignores it.",
                        s.name
                    ),
                    format!("change line {} of '{path}' to [profile {}]", s.pos.line, s.name),
                )
                .at(loc),
            );
        }
    }
    for h in &cfg.default_headers {
        out.push(
            Finding::new(
                Code::SectionName,
                Severity::Warning,
                "[DEFAULT] is not the default profile: configparser copies its keys into every section.",
                format!("rename [DEFAULT] to [default] on line {} of '{path}'", h.line),
            )
            .at(Some(Location::new(&cfg.path, *h))),
        );
    }
    if let (Some(a), Some(b)) = (default_plain, default_profile) {
        let (first, later) = if a.pos < b.pos { (a, b) } else { (b, a) };
        out.push(
            Finding::new(
                Code::DefaultProfileConflict,
                Severity::Warning,
                format!(
                    "both [{}] (line {}) and [{}] (line {}) define the default profile; botocore uses only the later one, other SDKs may pick the other.",
                    first.name, first.pos.line, later.name, later.pos.line
                ),
                format!("merge them into one [default] section in '{path}'"),
            )
            .at(Some(Location::new(&cfg.path, later.pos))),
        );
    }
}

fn section_case_finding(f: &IniFile, s: &ini::Section, name: &str) -> Finding {
    Finding::new(
        Code::SectionName,
        Severity::Warning,
        format!(
            "[{}] is not the same as `{}`: section names are case- and space-sensitive, so this is a different profile.",
            s.name,
            name.trim().to_lowercase()
        ),
        format!(
            "rename the header on line {} of '{}' to [{}]",
            s.pos.line,
            f.path.display(),
            s.name.replace(name, name.trim()).replace(name.trim(), &name.trim().to_lowercase())
        ),
    )
    .at(Some(Location::new(&f.path, s.pos)))
}

fn py_trim_differs(name: &str) -> bool {
    ini::py_strip(name) != name
}

fn looks_like_profile(s: &ini::Section) -> bool {
    const PROFILE_KEYS: &[&str] = &[
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "region",
        "output",
        "role_arn",
        "source_profile",
        "credential_process",
        "sso_session",
        "sso_start_url",
    ];
    s.entries
        .iter()
        .any(|e| PROFILE_KEYS.contains(&e.key.as_str()))
}

fn credentials_sections(creds: &IniFile, out: &mut Vec<Finding>) {
    let path = creds.path.display();
    for s in &creds.sections {
        let loc = Some(Location::new(&creds.path, s.pos));
        if let Some(rest) = s.name.strip_prefix("profile ") {
            out.push(
                Finding::new(
                    Code::SectionName,
                    Severity::Warning,
                    format!(
                        "[{}] in the credentials file is a profile literally named \"{}\"; the credentials file uses bare names.",
                        s.name, s.name
                    ),
                    format!("change line {} of '{path}' to [{}]", s.pos.line, rest.trim()),
                )
                .at(loc),
            );
        } else if (s.name != "default" && s.name.eq_ignore_ascii_case("default"))
            || py_trim_differs(&s.name)
        {
            out.push(section_case_finding(creds, s, &s.name));
        }
    }
    for h in &creds.default_headers {
        out.push(
            Finding::new(
                Code::SectionName,
                Severity::Warning,
                "[DEFAULT] is not the default profile: configparser copies its keys into every profile of this file.",
                format!("rename [DEFAULT] to [default] on line {} of '{path}'", h.line),
            )
            .at(Some(Location::new(&creds.path, *h))),
        );
    }
}

fn profile_selection(r: &Resolution, out: &mut Vec<Finding>) {
    if let (Some(p), Some(s)) = (&r.profile, &r.shadowed_profile) {
        if p.source != s.source && matches!(p.source, Source::Env { .. }) {
            out.push(Finding::new(
                Code::EnvOverridesProfile,
                Severity::Warning,
                format!(
                    "{} selects profile `{}` and {} selects `{}`; AWS CLI {} uses the first, other tools may use the other.",
                    p.source, p.value, s.source, s.value,
                    match r.cli { crate::resolve::CliVersion::V1 => "v1 (and boto3)", crate::resolve::CliVersion::V2 => "v2" }
                ),
                "unset AWS_DEFAULT_PROFILE   # keep only AWS_PROFILE",
            ));
        }
    }
}

fn chain_findings(r: &Resolution, env: &dyn Environment, out: &mut Vec<Finding>) {
    let nonempty = |n: &str| env.var(n).filter(|v| !v.is_empty());
    let env_keys = nonempty("AWS_ACCESS_KEY_ID").is_some();
    match &r.outcome {
        ChainOutcome::Failed(ChainError::ParseError { .. }) => {}
        ChainOutcome::Failed(ChainError::ProfileNotFound { name }) => {
            let names = all_profiles(&r.config, &r.credentials);
            let near = crate::closest(name, names.iter().map(String::as_str), 3);
            let src = r.profile.as_ref().map(|p| p.source.to_string()).unwrap_or_default();
            let mut msg = format!(
                "profile `{name}` (from {src}) is in neither {} nor {}; the CLI stops with \"The config profile ({name}) could not be found\"",
                r.config.path.display(),
                r.credentials.path.display()
            );
            if env_keys {
                msg.push_str(", even though AWS_ACCESS_KEY_ID is set");
            }
            msg.push('.');
            if !near.is_empty() {
                msg.push_str(&format!(" Did you mean `{}`?", near.join("`, `")));
            }
            let fix = match (&r.profile.as_ref().map(|p| &p.source), near.first()) {
                (Some(Source::Env { var }), Some(n)) => format!("export {var}={n}"),
                (Some(Source::Env { var }), None) => format!("unset {var}   # or: aws configure --profile {name}"),
                (_, Some(n)) => format!("use --profile {n}"),
                _ => format!("aws configure --profile {name}"),
            };
            out.push(Finding::new(Code::ProfileNotFound, Severity::Error, msg, fix));
        }
        ChainOutcome::Failed(ChainError::Partial { provider, missing }) => {
            let (msg, fix, loc) = match provider {
                Provider::Env => (
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is missing or empty; the CLI stops with \"Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY\".".to_string(),
                    "export AWS_SECRET_ACCESS_KEY=...   # or: unset AWS_ACCESS_KEY_ID".to_string(),
                    None,
                ),
                Provider::AssumeRole => (
                    format!(
                        "profile `{}` has role_arn but neither source_profile nor credential_source; the CLI stops with \"Partial credentials found in assume-role, missing: {missing}\".",
                        r.profile_name()
                    ),
                    "add `source_profile = <a profile with keys>`, or `credential_source = Environment` (or Ec2InstanceMetadata, EcsContainer)".to_string(),
                    r.get("role_arn").map(|k| k.location()),
                ),
                _ => {
                    // The selected profile's keys, or those of the source profile a role reads.
                    let key = r.get("aws_access_key_id");
                    let whose = if key.is_some() {
                        format!("profile `{}`", r.profile_name())
                    } else {
                        format!("the source profile of `{}`", r.profile_name())
                    };
                    (
                        format!(
                            "{whose} has aws_access_key_id but no {missing}; the CLI stops with \"Partial credentials found in {}, missing: {missing}\".",
                            provider.method()
                        ),
                        format!("add `{missing} = ...` below the key id, or: aws configure --profile {}", r.profile_name()),
                        key.map(|k| k.location()),
                    )
                }
            };
            out.push(Finding::new(Code::PartialCredentials, Severity::Error, msg, fix).at(loc));
        }
        ChainOutcome::Failed(ChainError::NoCredentials) => out.push(Finding::new(
            Code::NoCredentials,
            Severity::Error,
            format!(
                "no provider found credentials for profile `{}`: the CLI says \"Unable to locate credentials\".",
                r.profile_name()
            ),
            format!("aws configure --profile {}", r.profile_name()),
        )),
        ChainOutcome::Failed(
            ChainError::InvalidConfig { message, at }
            | ChainError::InfiniteLoop { message, at }
            | ChainError::CredentialRetrieval { message, at },
        ) => out.push(
            Finding::new(
                Code::InvalidConfig,
                Severity::Error,
                format!(
                    "profile `{}` selects a credential provider without what it needs; the CLI stops with \"{message}\".",
                    r.profile_name()
                ),
                format!(
                    "complete or correct the profile's role or SSO settings (see the message), or remove the ones that select the provider (profile `{}`)",
                    r.profile_name()
                ),
            )
            .at(at.clone()),
        ),
        ChainOutcome::Failed(ChainError::LegacyFileMissing { path }) => out.push(Finding::new(
            Code::FileUnreadable,
            Severity::Error,
            format!(
                "AWS_CREDENTIAL_FILE names {}, which cannot be read; CLI v1 aborts the whole chain on it.",
                path.display()
            ),
            "unset AWS_CREDENTIAL_FILE",
        )),
        ChainOutcome::Deferred { provider: Provider::IamRole, .. } => out.push(Finding::new(
            Code::NoCredentials,
            Severity::Warning,
            format!(
                "no credentials in the environment or files for profile `{}`; the CLI will ask the EC2 instance metadata service, which only answers on EC2.",
                r.profile_name()
            ),
            format!("aws configure --profile {}   # unless this runs on EC2 with a role", r.profile_name()),
        )),
        ChainOutcome::Deferred { provider, trigger } => out.push(
            Finding::new(
                Code::ProviderNotChecked,
                Severity::Info,
                format!(
                    "credentials come from the {} provider (triggered by {trigger}); they are fetched at run time, so the offline doctor cannot inspect them.",
                    provider.method()
                ),
                format!("aws configure export-credentials --profile {}", r.profile_name()),
            )
            .at(trigger.location().cloned()),
        ),
        ChainOutcome::Static(_) => {}
    }

    // Env keys vs. profiles.
    let profile_has_keys = |r: &Resolution| r.get("aws_access_key_id").is_some();
    if env_keys {
        match r.profile.as_ref().map(|p| &p.source) {
            Some(Source::Flag { .. }) => out.push(Finding::new(
                Code::EnvOverridesProfile,
                Severity::Info,
                "AWS_ACCESS_KEY_ID is set but --profile makes the CLI ignore it; SDKs and tools run without --profile will use the environment keys instead.",
                "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_SECURITY_TOKEN",
            )),
            Some(Source::Env { var }) if matches!(&r.outcome, ChainOutcome::Static(c) if c.provider == Provider::Env) => {
                out.push(
                    Finding::new(
                        Code::EnvOverridesProfile,
                        Severity::Warning,
                        format!(
                            "{var}={} is ignored for credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment win over any profile.",
                            r.profile_name()
                        ),
                        "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_SECURITY_TOKEN",
                    )
                    .at(r.get("aws_access_key_id").map(|f| f.location())),
                );
            }
            None if profile_has_keys(r)
                && matches!(&r.outcome, ChainOutcome::Static(c) if c.provider == Provider::Env) =>
            {
                out.push(
                    Finding::new(
                        Code::EnvOverridesProfile,
                        Severity::Info,
                        "the environment keys shadow the keys of the default profile.",
                        "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_SECURITY_TOKEN   # to use the profile",
                    )
                    .at(r.get("aws_access_key_id").map(|f| f.location())),
                );
            }
            _ => {}
        }
    } else if nonempty("AWS_SECRET_ACCESS_KEY").is_some()
        && r.profile
            .as_ref()
            .map(|p| &p.source)
            .is_none_or(|s| !matches!(s, Source::Flag { .. }))
    {
        out.push(Finding::new(
            Code::PartialCredentials,
            Severity::Warning,
            "AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID: botocore silently skips the environment and looks elsewhere.",
            "export AWS_ACCESS_KEY_ID=AKIA...   # or: unset AWS_SECRET_ACCESS_KEY",
        ));
    }
    // A section with a secret but no key id is skipped silently.
    let view = r.profile_view();
    for (sec, f) in [
        (view.credentials, r.credentials.ini()),
        (view.config, r.config.ini()),
    ] {
        if let (Some(s), Some(f)) = (sec, f) {
            if f.lookup(s, "aws_access_key_id").is_none() {
                if let Some(e) = f.lookup(s, "aws_secret_access_key") {
                    out.push(
                        Finding::new(
                            Code::PartialCredentials,
                            Severity::Warning,
                            format!(
                                "[{}] has aws_secret_access_key but no aws_access_key_id: botocore skips this section silently.",
                                s.name
                            ),
                            format!("add `aws_access_key_id = AKIA...` to [{}] in '{}'", s.name, f.path.display()),
                        )
                        .at(Some(Location::new(&f.path, e.key_pos))),
                    );
                }
            }
        }
    }
    // Both token env vars.
    if let (Some(a), Some(b)) = (
        nonempty("AWS_SECURITY_TOKEN"),
        nonempty("AWS_SESSION_TOKEN"),
    ) {
        if a != b {
            out.push(Finding::new(
                Code::ConflictingTokenVars,
                Severity::Warning,
                "AWS_SECURITY_TOKEN and AWS_SESSION_TOKEN are both set and differ; botocore uses the legacy AWS_SECURITY_TOKEN, most other SDKs use AWS_SESSION_TOKEN.",
                "unset AWS_SECURITY_TOKEN",
            ));
        }
    }
    for f in [r.credentials.ini(), r.config.ini()].into_iter().flatten() {
        for s in &f.sections {
            if let (Some(a), Some(b)) = (
                f.lookup(s, "aws_security_token"),
                f.lookup(s, "aws_session_token"),
            ) {
                if a.value != b.value {
                    out.push(
                        Finding::new(
                            Code::ConflictingTokenVars,
                            Severity::Warning,
                            format!(
                                "[{}] has both aws_security_token and aws_session_token with different values; botocore uses aws_security_token (line {}).",
                                s.name, a.key_pos.line
                            ),
                            format!("delete the aws_security_token line {} of '{}'", a.key_pos.line, f.path.display()),
                        )
                        .at(Some(Location::new(&f.path, a.key_pos))),
                    );
                }
            }
        }
    }
}

fn credential_findings(
    r: &Resolution,
    c: &ResolvedCredentials,
    env: &dyn Environment,
    out: &mut Vec<Finding>,
) {
    let key = &c.access_key_id.value;
    let secret = c.secret_access_key.value.expose();
    let key_loc = c.access_key_id.source.location().cloned();
    let secret_loc = c.secret_access_key.source.location().cloned();
    let emulator = r.endpoint.source != Source::Default;
    let format_sev = if emulator {
        Severity::Warning
    } else {
        Severity::Error
    };
    let from_env = c.provider == Provider::Env;
    let where_key = c.access_key_id.source.to_string();
    let where_secret = c.secret_access_key.source.to_string();

    let mut key_hidden = false;
    let mut secret_hidden = false;
    if from_env {
        for (name, v, flag) in [
            ("AWS_ACCESS_KEY_ID", key.as_str(), &mut key_hidden),
            ("AWS_SECRET_ACCESS_KEY", secret, &mut secret_hidden),
        ] {
            if let Some(h) = hidden(v, false) {
                *flag = true;
                out.push(Finding::new(
                    Code::HiddenCharacters,
                    Severity::Error,
                    format!("{name} contains {h}; environment values are used exactly as set."),
                    format!("export {name}=\"$(printf %s \"${name}\" | tr -d '[:space:]\\\"')\""),
                ));
            }
        }
        if let Some(t) = &c.session_token {
            if let Some(h) = hidden(t.value.expose(), false) {
                out.push(Finding::new(
                    Code::HiddenCharacters,
                    Severity::Error,
                    format!("{} contains {h}.", t.source),
                    "export the token again without the extra characters",
                ));
            }
        }
    } else {
        key_hidden = hidden(key, true).is_some();
        secret_hidden = hidden(secret, true).is_some();
    }

    if key.is_empty() {
        out.push(
            Finding::new(
                Code::EmptyKeyId,
                Severity::Error,
                format!(
                    "aws_access_key_id is present but empty ({where_key}); botocore still picks this profile and sends an empty key id."
                ),
                format!("aws configure set aws_access_key_id AKIA... --profile {}", r.profile_name()),
            )
            .at(key_loc.clone()),
        );
    } else if is_well_formed_secret(key) && key_kind(secret).is_some() {
        out.push(
            Finding::new(
                Code::KeySecretSwapped,
                Severity::Error,
                format!(
                    "the access key id ({where_key}) looks like a secret and the secret ({where_secret}) looks like a key id: they are swapped."
                ),
                "swap the two values (the id starts with AKIA or ASIA and is 20 characters)",
            )
            .at(key_loc.clone()),
        );
    } else {
        if !key_hidden && key_kind(key).is_none() {
            let why = if key.chars().count() != 20 {
                format!("is {} characters long, not 20", key.chars().count())
            } else if !(key.starts_with("AKIA") || key.starts_with("ASIA")) {
                "does not start with AKIA (long-term) or ASIA (temporary)".to_string()
            } else {
                "has characters outside A-Z and 2-7".to_string()
            };
            out.push(
                Finding::new(
                    Code::KeyIdFormat,
                    format_sev,
                    format!("the access key id ({where_key}, {}) {why}.", mask(key)),
                    "copy the key id again from the IAM console or the CreateAccessKey output",
                )
                .at(key_loc.clone()),
            );
        }
        if !secret_hidden && !is_well_formed_secret(secret) {
            let n = secret.chars().count();
            let why = if n != 40 {
                format!("is {n} characters long, not 40")
            } else {
                "has characters outside A-Z, a-z, 0-9, + and /".to_string()
            };
            out.push(
                Finding::new(
                    Code::SecretFormat,
                    format_sev,
                    format!("the secret access key ({where_secret}) {why}."),
                    "copy the secret again; it is shown only once at creation, so create a new key if it is lost",
                )
                .at(secret_loc.clone()),
            );
        }
    }

    let token = c
        .session_token
        .as_ref()
        .filter(|t| !t.value.expose().is_empty());
    match (key_kind(key), token) {
        (Some(KeyKind::LongTerm), Some(t)) => out.push(
            Finding::new(
                Code::TokenOnLongTermKey,
                Severity::Error,
                format!(
                    "a session token ({}) is attached to a long-term AKIA key: it is stale, and AWS rejects the pair (InvalidClientTokenId).",
                    t.source
                ),
                match &t.source {
                    Source::Env { var } => format!("unset {var}"),
                    Source::File { location } => format!("delete line {} of '{}'", location.line, location.path.display()),
                    _ => "remove the session token".to_string(),
                },
            )
            .at(t.source.location().cloned()),
        ),
        (Some(KeyKind::Temporary), None) => out.push(
            Finding::new(
                Code::TemporaryKeyWithoutToken,
                Severity::Error,
                format!(
                    "the key id ({where_key}) is a temporary ASIA key but no session token goes with it; AWS rejects it (InvalidAccessKeyId / InvalidClientTokenId)."
                ),
                if from_env {
                    "export AWS_SESSION_TOKEN=...   # from the same AssumeRole/GetSessionToken output".to_string()
                } else {
                    "add `aws_session_token = ...` next to the key id, from the same STS output".to_string()
                },
            )
            .at(key_loc.clone()),
        ),
        _ => {}
    }

    // Token in the other file.
    let view = r.profile_view();
    let token_keys = ["aws_session_token", "aws_security_token"];
    let other = match c.provider {
        Provider::SharedCredentialsFile => view.config.zip(r.config.ini()),
        Provider::ConfigFile => view.credentials.zip(r.credentials.ini()),
        _ => None,
    };
    if let Some((s, f)) = other {
        if token.is_none() {
            if let Some(e) = token_keys.iter().find_map(|k| f.lookup(s, k)) {
                out.push(
                    Finding::new(
                        Code::TokenInOtherFile,
                        Severity::Error,
                        format!(
                            "the keys come from {} but the session token is in {} ([{}]); botocore reads the token only from the file the keys are in, so it is dropped.",
                            where_key,
                            f.path.display(),
                            s.name
                        ),
                        format!(
                            "move `{} = ...` from line {} of '{}' next to the keys",
                            e.key,
                            e.key_pos.line,
                            f.path.display()
                        ),
                    )
                    .at(Some(Location::new(&f.path, e.key_pos))),
                );
            }
        }
    }

    // Expiry.
    let expiry = c.expiration.clone().or_else(|| {
        let sec = match c.provider {
            Provider::SharedCredentialsFile => view.credentials.zip(r.credentials.ini()),
            Provider::ConfigFile => view.config.zip(r.config.ini()),
            _ => None,
        }?;
        EXPIRY_KEYS
            .iter()
            .find_map(|k| sec.1.lookup(sec.0, k))
            .map(|e| crate::resolve::Sourced {
                value: e.value.clone(),
                source: Source::File {
                    location: Location::new(&sec.1.path, e.value_pos),
                },
            })
    });
    if let Some(exp) = expiry {
        if let Some(t) = parse_rfc3339(&exp.value) {
            let now = env
                .now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if t <= now {
                out.push(
                    Finding::new(
                        Code::CredentialsExpired,
                        Severity::Error,
                        format!(
                            "these credentials expired at {} ({}), {} ago.",
                            exp.value,
                            exp.source,
                            human_duration(now - t)
                        ),
                        "get fresh temporary credentials (aws sts assume-role / get-session-token, or re-run the tool that wrote them)",
                    )
                    .at(exp.source.location().cloned()),
                );
            }
        }
    }

    // Account: as the provider that supplied the keys states it (botocore reads
    // `aws_account_id` only from the keys' own section, `AWS_ACCOUNT_ID` only with keys from the
    // environment); an account id anywhere else is not the CLI's.
    let expected = c.account_id.clone();
    if let (Some(decoded), Some(expected)) = (account_of_key_id(key), &expected) {
        if decoded != expected.value.trim() {
            out.push(
                Finding::new(
                    Code::AccountMismatch,
                    Severity::Error,
                    format!(
                        "the key id ({where_key}) belongs to account {decoded}, but {} says {}.",
                        expected.source, expected.value
                    ),
                    format!(
                        "use the key of account {} or correct the account id ({})",
                        expected.value, expected.source
                    ),
                )
                .at(expected.source.location().cloned().or(key_loc)),
            );
        }
    }
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 / ISO 8601 timestamp (`2024-05-01T12:00:00Z`,
/// fractional seconds and `+hh:mm` offsets accepted).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        r if (r.starts_with('+') || r.starts_with('-')) && r.len() == 6 => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            sign * (r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123+01:00"),
            Some(1_709_204_400)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn hidden_chars() {
        assert!(hidden("abc\r", false).unwrap().contains("carriage return"));
        assert!(hidden("ab\u{200b}c", true).unwrap().contains("zero-width"));
        assert!(hidden("\"abc\"", true).unwrap().contains("quotes"));
        assert!(hidden("abc # mine", true)
            .unwrap()
            .contains("inline comment"));
        assert!(hidden("abcé", true).unwrap().contains("non-ASCII"));
        assert!(hidden("abc\tx", true).unwrap().contains("tab"));
        assert_eq!(
            hidden("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", false),
            None
        );
    }
}
