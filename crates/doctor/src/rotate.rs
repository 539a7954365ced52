//! `keyward rotate`: replace the long-term access key of a profile with a new one, safely.
//!
//! Order: check the current key works (`sts:GetCallerIdentity`) → make room at the two-key limit (only
//! with consent) → `iam:CreateAccessKey` → write the new key into the file in place (backup, temp file,
//! rename) → verify the new key (retrying while AWS propagates it) → `iam:UpdateAccessKey Inactive` on
//! the old key → `iam:DeleteAccessKey` with `--delete-old`. Whatever step fails, the file holds a key
//! that works and the output says which keys exist and in what state.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::aws::{self, AwsError, Client, Credentials};
use crate::env::Environment;
use crate::ini::{self, IniFile};
use crate::resolve::{self, ChainOutcome, CliVersion, Provider, Request, Resolution};
use crate::{report, EXIT_FINDING, EXIT_MISUSE, EXIT_OK};

/// `keyward rotate`: replace the access key of a profile with a new one.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RotateArgs {
    /// Rotate the key of this profile (default: the profile the AWS CLI would use).
    #[arg(long)]
    pub profile: Option<String>,
    /// The IAM and STS endpoint, as `aws --endpoint-url` (e.g. a keyward server).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// The region to sign with for a custom endpoint, as `aws --region`.
    #[arg(long)]
    pub region: Option<String>,
    /// Delete the old key after deactivating it (default: leave it inactive).
    #[arg(long)]
    pub delete_old: bool,
    /// Do not ask before deleting an *inactive* extra key at the two-key limit.
    #[arg(long)]
    pub yes: bool,
}

/// Asks the user a yes/no question.
pub trait Confirm {
    /// `Some(answer)`, or `None` when nobody can be asked (no terminal).
    fn ask(&mut self, question: &str) -> Option<bool>;
}

/// Asks on the terminal (stderr + stdin); `None` when stdin is not a terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalConfirm;

impl Confirm for TerminalConfirm {
    fn ask(&mut self, question: &str) -> Option<bool> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        stdin.lock().read_line(&mut line).ok()?;
        let a = line.trim().to_ascii_lowercase();
        Some(a == "y" || a == "yes")
    }
}

/// How long to keep trying a freshly created key (AWS propagates new keys within seconds).
const PROPAGATION: Duration = Duration::from_secs(20);

/// Runs `keyward rotate`, asking on the terminal when it must.
pub fn run_rotate(args: &RotateArgs, env: &dyn Environment, out: &mut dyn Write) -> i32 {
    run_rotate_with(args, env, out, &mut TerminalConfirm)
}

/// One access key as IAM lists it.
#[derive(Clone, Debug)]
struct KeyMeta {
    id: String,
    status: String,
    created: String,
}

struct Rotation<'a> {
    out: &'a mut dyn Write,
    iam_url: String,
    iam_region: String,
    sts_url: String,
    sts_region: String,
    /// Keys deleted to make room for the new one (so a later failure does not claim that nothing
    /// changed).
    deleted: Vec<String>,
}

impl Rotation<'_> {
    fn say(&mut self, label: &str, text: impl AsRef<str>) {
        let _ = writeln!(self.out, "  {label:<9} {}", text.as_ref());
    }

    /// "Nothing was changed", unless keys were deleted to make room.
    fn unchanged(&self) -> String {
        if self.deleted.is_empty() {
            "Nothing was changed".to_owned()
        } else {
            format!(
                "Nothing was changed but the deletion of {} to make room",
                self.deleted.join(", ")
            )
        }
    }

    fn fail(&mut self, text: impl AsRef<str>) -> i32 {
        let _ = writeln!(self.out, "\nrotate stopped: {}", text.as_ref());
        EXIT_FINDING
    }

    fn iam(&self, creds: &Credentials) -> Result<Client, String> {
        Client::new(&self.iam_url, "iam", &self.iam_region, creds.clone())
    }

    fn sts(&self, creds: &Credentials) -> Result<Client, String> {
        Client::new(&self.sts_url, "sts", &self.sts_region, creds.clone())
    }

    fn iam_call(
        &self,
        creds: &Credentials,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        let c = self.iam(creds).map_err(AwsError::Transport)?;
        c.call(action, params).map(|r| r.xml)
    }

    fn list_keys(&self, creds: &Credentials) -> Result<Vec<KeyMeta>, AwsError> {
        let xml = self.iam_call(creds, "ListAccessKeys", &[])?;
        Ok(aws::xml_blocks(&xml, "member")
            .into_iter()
            .filter_map(|m| {
                Some(KeyMeta {
                    id: aws::xml_text(m, "AccessKeyId")?,
                    status: aws::xml_text(m, "Status").unwrap_or_default(),
                    created: aws::xml_text(m, "CreateDate").unwrap_or_default(),
                })
            })
            .collect())
    }

    /// "Keys now: AKIA... Active, AKIA... Inactive", from whichever credentials still work.
    fn state_of_keys(&mut self, try_creds: &[&Credentials]) {
        for c in try_creds {
            if let Ok(keys) = self.list_keys(c) {
                let list: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{} {}", k.id, k.status))
                    .collect();
                self.say("keys now", list.join(", "));
                return;
            }
        }
        self.say("keys now", "(could not list them)");
    }

    /// Makes room for one more key: deletes an extra key only with consent. `Ok(true)` when room was
    /// made, `Ok(false)` when there was nothing to do.
    fn make_room(
        &mut self,
        creds: &Credentials,
        keys: &[KeyMeta],
        old: &str,
        args: &RotateArgs,
        confirm: &mut dyn Confirm,
    ) -> Result<bool, String> {
        if keys.len() < 2 {
            return Ok(false);
        }
        let Some(extra) = keys.iter().find(|k| k.id != old) else {
            return Ok(false);
        };
        self.say(
            "limit",
            format!(
                "this identity already has {} access keys, the most IAM allows (inactive keys count too); \
                 another key, {} ({}, created {}), must go before a new one can be created.",
                keys.len(),
                extra.id,
                extra.status,
                extra.created
            ),
        );
        let delete = if extra.status.eq_ignore_ascii_case("Inactive") {
            if args.yes {
                true
            } else {
                match confirm.ask(&format!("Delete the inactive key {}?", extra.id)) {
                    Some(a) => a,
                    None => {
                        return Err(format!(
                            "no terminal to ask on: rerun with --yes to delete the inactive key {}, or delete it yourself \
                             (aws iam delete-access-key --access-key-id {}). Nothing was changed.",
                            extra.id, extra.id
                        ))
                    }
                }
            }
        } else {
            match confirm.ask(&format!(
                "{} is ACTIVE and is not the key of this profile: something else may use it. Delete it anyway?",
                extra.id
            )) {
                Some(a) => a,
                None => {
                    return Err(format!(
                        "{} is active and is not the key being rotated; keyward deletes an active key only when you \
                         confirm on a terminal (--yes does not cover it). Deactivate or delete it yourself first \
                         (aws iam update-access-key --access-key-id {} --status Inactive). Nothing was changed.",
                        extra.id, extra.id
                    ))
                }
            }
        };
        if !delete {
            return Err(format!(
                "{} was kept, so there is no room for a new key. Nothing was changed.",
                extra.id
            ));
        }
        self.iam_call(creds, "DeleteAccessKey", &[("AccessKeyId", &extra.id)])
            .map_err(|e| {
                format!(
                    "deleting {} failed: {e}. Nothing else was changed.",
                    extra.id
                )
            })?;
        self.say("deleted", format!("{} ({})", extra.id, extra.status));
        self.deleted.push(extra.id.clone());
        Ok(true)
    }

    /// After a CreateAccessKey that got no answer: a key IAM made meanwhile (listed now, not
    /// before, and not the one being rotated) is one whose secret nobody has; it is deleted, or
    /// named with the command to delete it. Without the list from before, the other keys are
    /// named for the user to check.
    fn lost_new_key(&mut self, creds: &Credentials, before: Option<&[KeyMeta]>, old: &str) {
        let now = match self.list_keys(creds) {
            Ok(k) => k,
            Err(e) => {
                self.say(
                    "warning",
                    format!("IAM may have created a key before the connection failed, and listing the keys to check failed ({e}): run `aws iam list-access-keys`"),
                );
                return;
            }
        };
        for k in now.iter().filter(|k| k.id != old) {
            let Some(before) = before else {
                self.say(
                    "warning",
                    format!("{} ({}) exists: if this attempt created it, nobody has its secret; delete it (aws iam delete-access-key --access-key-id {})", k.id, k.status, k.id),
                );
                continue;
            };
            if before.iter().any(|b| b.id == k.id) {
                continue;
            }
            match self.iam_call(creds, "DeleteAccessKey", &[("AccessKeyId", &k.id)]) {
                Ok(_) => self.say(
                    "undone",
                    format!("IAM had created {} before the connection failed; nobody has its secret, so it was deleted", k.id),
                ),
                Err(e) => self.say(
                    "warning",
                    format!("IAM created {} before the connection failed and nobody has its secret; deleting it failed ({e}): aws iam delete-access-key --access-key-id {}", k.id, k.id),
                ),
            }
        }
    }
}

/// The IAM endpoint: `--endpoint-url` > `AWS_ENDPOINT_URL_IAM` > `AWS_ENDPOINT_URL` > the profile's
/// `endpoint_url` > AWS's (`https://iam.amazonaws.com`, or the China partition's for a `cn-` region).
fn iam_endpoint(args: &RotateArgs, r: &Resolution, env: &dyn Environment) -> String {
    if let Some(u) = &args.endpoint_url {
        return u.clone();
    }
    for var in ["AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL"] {
        if let Some(v) = env.var(var).filter(|v| !v.is_empty()) {
            return v;
        }
    }
    if let Some(f) = r.get("endpoint_url") {
        return f.entry.value.clone();
    }
    match r.region.as_ref().map(|r| r.value.as_str()) {
        Some(reg) if reg.starts_with("cn-") => "https://iam.cn-north-1.amazonaws.com.cn".into(),
        _ => "https://iam.amazonaws.com".into(),
    }
}

fn signing_region(url: &str, r: &Resolution) -> String {
    aws::aws_region_of(url)
        .or_else(|| {
            r.region
                .as_ref()
                .map(|s| s.value.clone())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "us-east-1".into())
}

/// Runs `keyward rotate` with `confirm` for the questions.
pub fn run_rotate_with(
    args: &RotateArgs,
    env: &dyn Environment,
    out: &mut dyn Write,
    confirm: &mut dyn Confirm,
) -> i32 {
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
    let req = Request {
        profile: args.profile.clone(),
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
        cli: CliVersion::V2,
    };
    let r = resolve::resolve(&req, env);
    let refuse = |out: &mut dyn Write, why: String| {
        let _ = writeln!(out, "keyward rotate: {why}");
        EXIT_FINDING
    };
    let c = match &r.outcome {
        ChainOutcome::Static(c) => c.clone(),
        ChainOutcome::Deferred { provider, trigger } => {
            return refuse(
                out,
                format!(
                    "the credentials come from {} ({trigger}): they are fetched at run time, there is no key in a file to rotate.",
                    provider.method()
                ),
            )
        }
        ChainOutcome::Failed(e) => {
            return refuse(
                out,
                format!(
                    "no usable credentials: {}. Run `keyward doctor` to see why.",
                    report::chain_error_message(e)
                ),
            )
        }
    };
    let old = c.access_key_id.value.clone();
    if c.provider == Provider::Env {
        return refuse(
            out,
            format!(
                "the credentials come from environment variables ({}), and rotating would not update them: the \
                 old key would stay in your shell, scripts or CI settings. Rotate the key where it is stored, or \
                 unset the variables and use --profile to rotate a key kept in ~/.aws/credentials.",
                c.access_key_id.source
            ),
        );
    }
    if keyward_ids::key_kind(&old) == Some(keyward_ids::KeyKind::Temporary) {
        return refuse(
            out,
            format!(
                "{old} is a temporary key (ASIA...): it expires on its own and cannot be rotated. Rotate the long-term \
                 key it was issued from."
            ),
        );
    }
    let Some(loc) = c.access_key_id.source.location().cloned() else {
        return refuse(
            out,
            format!(
                "the key does not come from a file ({}), so there is nowhere to write a new one.",
                c.access_key_id.source
            ),
        );
    };
    let file = [&r.credentials, &r.config]
        .into_iter()
        .find(|f| f.path == loc.path)
        .and_then(|f| f.ini().cloned());
    let Some(file) = file else {
        return refuse(out, format!("cannot read {} again", loc.path.display()));
    };
    if file.botocore_fails() {
        return refuse(
            out,
            format!(
                "{} does not parse as the AWS CLI reads it; fix it first (`keyward doctor` shows where).",
                loc.path.display()
            ),
        );
    }
    let text = match std::fs::read(&loc.path).map(String::from_utf8) {
        Ok(Ok(t)) => t,
        _ => {
            return refuse(
                out,
                format!("cannot read {} as UTF-8 text", loc.path.display()),
            )
        }
    };

    // The file must be one this tool can edit (the key in a section of its own, not inherited
    // from [DEFAULT]) before any key is created: tried now with a stand-in key.
    if let Err(why) = rewrite(
        &text,
        &file,
        &old,
        "AKIAAAAAAAAAAAAAAAAA",
        "keyward-rotate-stand-in-secret-0000000000",
    ) {
        return refuse(out, format!("{why}; nothing was changed"));
    }

    let iam_url = iam_endpoint(args, &r, env);
    let sts_url = r.endpoint.url.clone();
    let mut rot = Rotation {
        iam_region: signing_region(&iam_url, &r),
        sts_region: signing_region(&sts_url, &r),
        iam_url,
        sts_url,
        out,
        deleted: Vec::new(),
    };
    let _ = writeln!(
        rot.out,
        "Rotating {old} of profile {:?} ({loc})",
        r.profile_name()
    );
    // A token next to a long-term key is stale: AWS refuses the pair. Sign without it; it is removed below.
    let stale_token = c.session_token.as_ref().map(|t| t.source.clone());
    if let Some(src) = &stale_token {
        rot.say(
            "note",
            format!("a session token ({src}) sits next to this long-term key; every call with it fails. It will be removed."),
        );
    }
    let old_creds = Credentials {
        access_key_id: old.clone(),
        secret_access_key: c.secret_access_key.value.expose().to_string(),
        session_token: None,
    };

    // 1. The current key must work: it is the fallback for every later step.
    let who = match rot
        .sts(&old_creds)
        .map_err(AwsError::Transport)
        .and_then(|s| s.call("GetCallerIdentity", &[]))
    {
        Ok(reply) => match aws::parse_identity(&reply.xml) {
            Some(id) => id,
            None => {
                return rot
                    .fail("GetCallerIdentity answered without an identity. Nothing was changed.")
            }
        },
        Err(e) => {
            let sts_url = rot.sts_url.clone();
            return rot.fail(format!(
                "the current key does not work at {sts_url}: {e}. Nothing was changed; `keyward doctor` says why."
            ));
        }
    };
    rot.say(
        "caller",
        format!("{} (account {}) via {}", who.arn, who.account, rot.iam_url),
    );

    // 2. Room for a second key.
    let keys = match rot.list_keys(&old_creds) {
        Ok(k) => {
            let list: Vec<String> = k.iter().map(|k| format!("{} {}", k.id, k.status)).collect();
            rot.say("keys", list.join(", "));
            Some(k)
        }
        Err(e) => {
            rot.say("keys", format!("could not list them ({e}); trying anyway"));
            None
        }
    };
    if let Some(keys) = &keys {
        if let Err(why) = rot.make_room(&old_creds, keys, &old, args, confirm) {
            return rot.fail(why);
        }
    }

    // 3. The new key.
    let mut created = rot.iam_call(&old_creds, "CreateAccessKey", &[]);
    if matches!(&created, Err(e) if e.code() == Some("LimitExceeded")) {
        let keys = match rot.list_keys(&old_creds) {
            Ok(k) => k,
            Err(e) => {
                let unchanged = rot.unchanged();
                return rot.fail(format!(
                    "IAM says this identity has too many keys (LimitExceeded), and listing them failed: {e}. {unchanged}."
                ));
            }
        };
        match rot.make_room(&old_creds, &keys, &old, args, confirm) {
            Ok(_) => created = rot.iam_call(&old_creds, "CreateAccessKey", &[]),
            Err(why) => return rot.fail(why),
        }
    }
    let xml = match created {
        Ok(x) => x,
        Err(e) => {
            let hint = if e.code() == Some("AccessDenied") {
                " (if AWS attached its quarantine policy AWSCompromisedKeyQuarantine after a leak, it denies this; ask an administrator)"
            } else {
                ""
            };
            if e.code().is_none() {
                // No answer (the connection failed): IAM may have made the key all the same,
                // and nobody has its secret. Find it and take it back.
                rot.lost_new_key(&old_creds, keys.as_deref(), &old);
            }
            let unchanged = rot.unchanged();
            return rot.fail(format!(
                "CreateAccessKey failed: {e}{hint}. {unchanged}: {old} is still in the file and active."
            ));
        }
    };
    let (Some(new_id), Some(new_secret)) = (
        aws::xml_text(&xml, "AccessKeyId"),
        aws::xml_text(&xml, "SecretAccessKey"),
    ) else {
        let unchanged = rot.unchanged();
        return rot.fail(format!(
            "CreateAccessKey answered without a key. {unchanged}."
        ));
    };
    rot.say("created", &new_id);
    let new_creds = Credentials {
        access_key_id: new_id.clone(),
        secret_access_key: new_secret.clone(),
        session_token: None,
    };

    // Undo for steps 4 and 5: the new key is removed so only the old, working one remains.
    let undo_new = |rot: &mut Rotation<'_>| {
        match rot.iam_call(
        &old_creds,
        "DeleteAccessKey",
        &[("AccessKeyId", &new_id)],
    ) {
        Ok(_) => rot.say("undone", format!("deleted the new key {new_id} again")),
        Err(e) => rot.say(
            "warning",
            format!("the new key {new_id} could not be deleted ({e}); delete it: aws iam delete-access-key --access-key-id {new_id}"),
        ),
    }
    };

    // 4. Into the file.
    let edit = match rewrite(&text, &file, &old, &new_id, &new_secret) {
        Ok(e) => e,
        Err(why) => {
            undo_new(&mut rot);
            return rot.fail(format!(
                "{why}. The file was not changed: it still holds {old}, which is active."
            ));
        }
    };
    let backup = match replace_file(&loc.path, &edit.text) {
        Ok(b) => b,
        Err(why) => {
            undo_new(&mut rot);
            rot.state_of_keys(&[&old_creds]);
            return rot.fail(format!(
                "writing {} failed: {why}. The file still holds {old}, which is active.",
                loc.path.display()
            ));
        }
    };
    rot.say(
        "wrote",
        format!(
            "{} (profiles: {}); the previous file is at {}",
            loc.path.display(),
            edit.sections.join(", "),
            backup.display()
        ),
    );
    for line in &edit.removed_tokens {
        rot.say(
            "removed",
            format!("the stale session token at line {line} of the old file"),
        );
    }

    // 5. The new key must work before the old one is switched off.
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    let verified = loop {
        match rot
            .sts(&new_creds)
            .map_err(AwsError::Transport)
            .and_then(|s| s.call("GetCallerIdentity", &[]))
        {
            Ok(reply) => break Ok(aws::parse_identity(&reply.xml)),
            Err(e) if started.elapsed() + delay > PROPAGATION => break Err(e),
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(4));
            }
        }
    };
    match verified {
        Ok(Some(id)) if id.arn == who.arn => rot.say(
            "verified",
            format!(
                "{new_id} works ({}) after {:.1} s",
                id.arn,
                started.elapsed().as_secs_f64()
            ),
        ),
        other => {
            let why = match other {
                Ok(Some(id)) => format!("the new key answers as {}, not {}", id.arn, who.arn),
                Ok(None) => "GetCallerIdentity answered without an identity".into(),
                Err(e) => format!(
                    "the new key still fails after {} s: {e}",
                    PROPAGATION.as_secs()
                ),
            };
            let restored = replace_file(&loc.path, &text).map(|b| {
                let _ = std::fs::remove_file(b);
            });
            match restored {
                Ok(()) => rot.say(
                    "restored",
                    format!("{} holds {old} again", loc.path.display()),
                ),
                Err(e) => rot.say(
                    "warning",
                    format!(
                        "could not restore the file ({e}); the previous one is at {}",
                        backup.display()
                    ),
                ),
            }
            undo_new(&mut rot);
            rot.state_of_keys(&[&old_creds]);
            return rot.fail(format!("{why}. The old key {old} is active and in use."));
        }
    }

    // 6. Switch the old key off (with the new key: proof that it works with IAM too).
    let started = Instant::now();
    let deactivated = loop {
        match rot.iam_call(
            &new_creds,
            "UpdateAccessKey",
            &[("AccessKeyId", &old), ("Status", "Inactive")],
        ) {
            Ok(_) => break Ok(()),
            Err(e)
                if e.code() == Some("InvalidClientTokenId")
                    && started.elapsed() + Duration::from_secs(1) <= PROPAGATION =>
            {
                std::thread::sleep(Duration::from_secs(1))
            }
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = deactivated {
        rot.state_of_keys(&[&new_creds, &old_creds]);
        return rot.fail(format!(
            "deactivating the old key failed: {e}. The file holds the new key {new_id}, which works; the old key \
             {old} is still ACTIVE. Deactivate it: aws iam update-access-key --access-key-id {old} --status Inactive"
        ));
    }
    rot.say("old key", format!("{old} is now Inactive"));

    // 7. Optionally delete it.
    if args.delete_old {
        match rot.iam_call(&new_creds, "DeleteAccessKey", &[("AccessKeyId", &old)]) {
            Ok(_) => rot.say("deleted", &old),
            Err(e) => {
                rot.state_of_keys(&[&new_creds]);
                return rot.fail(format!(
                    "deleting the old key failed: {e}. The file holds the new key {new_id}, which works; {old} is \
                     inactive. Delete it: aws iam delete-access-key --access-key-id {old}"
                ));
            }
        }
    }
    rot.state_of_keys(&[&new_creds]);
    let tail = if args.delete_old {
        String::new()
    } else {
        format!(
            " The old key is inactive, not deleted: once nothing breaks, delete it (aws iam delete-access-key --access-key-id {old}); \
             if something does, reactivate it (--status Active)."
        )
    };
    let _ = writeln!(
        rot.out,
        "\nDone: profile {:?} now uses {new_id}.{tail}",
        r.profile_name()
    );
    EXIT_OK
}

/// The edited file text and what changed.
#[derive(Debug)]
struct Edit {
    text: String,
    sections: Vec<String>,
    removed_tokens: Vec<u32>,
}

/// Replaces key id and secret in every section of `file` whose `aws_access_key_id` is `old`, and
/// removes session tokens there; every other byte (comments, order, other profiles, line endings) stays.
fn rewrite(
    text: &str,
    file: &IniFile,
    old: &str,
    new_id: &str,
    new_secret: &str,
) -> Result<Edit, String> {
    // Numbered as the parser numbers them (a lone `\r` ends a line too), each with its ending.
    let mut lines: Vec<Option<String>> = ini::py_file_lines_with_endings(text)
        .map(|(l, ending)| Some(format!("{l}{ending}")))
        .collect();
    let mut sections = Vec::new();
    let mut removed_tokens = Vec::new();
    let set_value =
        |lines: &mut Vec<Option<String>>, e: &ini::Entry, value: &str| -> Result<(), String> {
            let idx = e.key_pos.line as usize - 1;
            let line = lines
                .get(idx)
                .and_then(|l| l.clone())
                .ok_or_else(|| format!("line {} is missing", e.key_pos.line))?;
            let body = line.trim_end_matches(['\r', '\n']);
            let ending = &line[body.len()..];
            let prefix: String = body.chars().take(e.value_pos.col as usize - 1).collect();
            lines[idx] = Some(format!("{prefix}{value}{ending}"));
            for l in &e.continuation_lines {
                lines[*l as usize - 1] = None;
            }
            Ok(())
        };
    for s in &file.sections {
        let Some(id) = s.get("aws_access_key_id") else {
            continue;
        };
        if id.value != old {
            continue;
        }
        let Some(secret) = s.get("aws_secret_access_key") else {
            continue;
        };
        set_value(&mut lines, id, new_id)?;
        set_value(&mut lines, secret, new_secret)?;
        for e in &s.entries {
            if e.key == "aws_session_token" || e.key == "aws_security_token" {
                lines[e.key_pos.line as usize - 1] = None;
                for l in &e.continuation_lines {
                    lines[*l as usize - 1] = None;
                }
                removed_tokens.push(e.key_pos.line);
            }
        }
        sections.push(s.name.clone());
    }
    if sections.is_empty() {
        return Err(format!("no section of {} holds {old}", file.path.display()));
    }
    let text: String = lines.into_iter().flatten().collect();
    reads_back(file, &text, &sections, new_id, new_secret)?;
    Ok(Edit {
        text,
        sections,
        removed_tokens,
    })
}

/// Checks an edited file as the CLI will read it, before it is written: the rewritten sections
/// hold the new key (and no session token), and everything else reads exactly as before.
fn reads_back(
    before: &IniFile,
    text: &str,
    rewritten: &[String],
    new_id: &str,
    new_secret: &str,
) -> Result<(), String> {
    let after = ini::parse(&before.path, text.as_bytes());
    let differs = |why: String| {
        Err(format!(
            "the edited {} would not read back as intended ({why}); it was not written",
            before.path.display()
        ))
    };
    if after.botocore_fails() && !before.botocore_fails() {
        return differs("it would no longer parse".into());
    }
    if after.sections.len() != before.sections.len() {
        return differs("its sections changed".into());
    }
    let token = |k: &str| k == "aws_session_token" || k == "aws_security_token";
    for (b, a) in before.sections.iter().zip(&after.sections) {
        if a.name != b.name {
            return differs(format!("section [{}] became [{}]", b.name, a.name));
        }
        let edited = rewritten.contains(&b.name);
        let expect = |e: &ini::Entry| -> Option<String> {
            match e.key.as_str() {
                "aws_access_key_id" if edited => Some(new_id.to_owned()),
                "aws_secret_access_key" if edited => Some(new_secret.to_owned()),
                k if edited && token(k) => None,
                _ => Some(e.value.clone()),
            }
        };
        let wanted: Vec<(&str, String)> = b
            .entries
            .iter()
            .filter_map(|e| expect(e).map(|v| (e.key.as_str(), v)))
            .collect();
        let got: Vec<(&str, String)> = a
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.clone()))
            .collect();
        if wanted != got {
            return differs(format!(
                "section [{}] would not hold what it should",
                b.name
            ));
        }
    }
    Ok(())
}

/// Writes `text` to `path` atomically (temp file in the same directory + rename), keeping the file's
/// mode (0600 for a new file), after copying the current file to `PATH.keyward-backup-TIMESTAMP` (same
/// mode). Returns the backup's path. Follows a symlink to write the real file.
fn replace_file(path: &Path, text: &str) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = real.parent().unwrap_or(Path::new("."));
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".into());
    let stamp = keyward_sigv4::format_amz_date(SystemTime::now());
    let mut backup = dir.join(format!("{name}.keyward-backup-{stamp}"));
    let mut n = 1;
    while backup.exists() {
        backup = dir.join(format!("{name}.keyward-backup-{stamp}-{n}"));
        n += 1;
    }
    let mode = file_mode(&real);
    if real.exists() {
        std::fs::copy(&real, &backup)
            .map_err(|e| format!("backup to {}: {e}", backup.display()))?;
        set_mode(&backup, mode.unwrap_or(0o600))?;
    }
    let tmp = dir.join(format!(".{name}.keyward-tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = create_private(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        set_mode(&tmp, mode.unwrap_or(0o600)).map_err(std::io::Error::other)?;
        std::fs::rename(&tmp, &real)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{e}")
    })?;
    Ok(backup)
}

#[cfg(unix)]
fn file_mode(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> Option<u32> {
    None
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<(), String> {
    Ok(())
}

#[cfg(unix)]
fn create_private(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
}

#[cfg(not(unix))]
fn create_private(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_everything_else() {
        let text = "# my keys\r\n[default]\r\naws_access_key_id = AKIAOLD # note\r\n; secret below\r\naws_secret_access_key=oldsecret\r\naws_session_token = stale\r\nregion = eu-west-1\r\n\r\n[other]\r\naws_access_key_id = AKIAOTHER\r\naws_secret_access_key = x\r\n[same]\r\n  aws_access_key_id: AKIAOLD\r\naws_secret_access_key = oldsecret\r\n";
        let file = ini::parse(Path::new("c"), text.as_bytes());
        // botocore keeps "# note" in the value, so that line does not hold AKIAOLD exactly.
        let e = rewrite(text, &file, "AKIAOLD", "AKIANEW", "newsecret");
        let e = e.unwrap();
        assert_eq!(e.sections, vec!["same".to_string()]);
        let text2 = text.replace(" # note", "");
        let file2 = ini::parse(Path::new("c"), text2.as_bytes());
        let e = rewrite(&text2, &file2, "AKIAOLD", "AKIANEW", "newsecret").unwrap();
        assert_eq!(e.sections, vec!["default".to_string(), "same".to_string()]);
        assert_eq!(e.removed_tokens, vec![6]);
        assert_eq!(
            e.text,
            "# my keys\r\n[default]\r\naws_access_key_id = AKIANEW\r\n; secret below\r\naws_secret_access_key=newsecret\r\nregion = eu-west-1\r\n\r\n[other]\r\naws_access_key_id = AKIAOTHER\r\naws_secret_access_key = x\r\n[same]\r\n  aws_access_key_id: AKIANEW\r\naws_secret_access_key = newsecret\r\n"
        );
        assert!(rewrite(&text2, &file2, "AKIANONE", "A", "B").is_err());
    }

    /// Lines end as the parser counts them: a lone CR, or a doubled CR before LF (a file converted
    /// to CRLF twice), ends a line too. Rewriting by LF alone once put the new key over the wrong
    /// lines, and the file no longer parsed.
    #[test]
    fn rewrite_counts_lines_as_the_parser_does() {
        for text in [
            "[work]\r\r\naws_access_key_id = AKIAOLD\r\r\naws_secret_access_key = oldsecret\r\r\n[other]\r\r\naws_access_key_id = AKIAOTHER\r\r\naws_secret_access_key = x\r\r\n",
            "# keys\r# (old mac line)\n[work]\naws_access_key_id = AKIAOLD\naws_secret_access_key = oldsecret\n[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = x\n",
            "[work]\raws_access_key_id = AKIAOLD\raws_secret_access_key = oldsecret\r[other]\raws_access_key_id = AKIAOTHER\raws_secret_access_key = x",
        ] {
            let file = ini::parse(Path::new("c"), text.as_bytes());
            let e = rewrite(text, &file, "AKIAOLD", "AKIANEW", "newsecret").unwrap();
            assert_eq!(e.text, text.replace("AKIAOLD", "AKIANEW").replace("oldsecret", "newsecret"));
            let back = ini::parse(Path::new("c"), e.text.as_bytes());
            assert_eq!(back.section("other").unwrap().get("aws_access_key_id").unwrap().value, "AKIAOTHER");
        }
    }

    /// An edit that would not read back as intended is refused before anything is written.
    #[test]
    fn an_edit_that_reads_back_wrong_is_refused() {
        let text = "[work]\naws_access_key_id = AKIAOLD\naws_secret_access_key = oldsecret\n";
        let file = ini::parse(Path::new("c"), text.as_bytes());
        let broken = "[work]\naws_access_key_id = AKIANEW\naws_secret_access_keynewsecret\n";
        assert!(reads_back(&file, broken, &["work".to_string()], "AKIANEW", "newsecret").is_err());
        let good = "[work]\naws_access_key_id = AKIANEW\naws_secret_access_key = newsecret\n";
        assert!(reads_back(&file, good, &["work".to_string()], "AKIANEW", "newsecret").is_ok());
    }
}
