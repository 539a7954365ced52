//! STS operations: GetCallerIdentity, GetAccessKeyInfo, GetSessionToken.

use crate::app::App;
use crate::authz::authorize_sts;
use crate::caller::Caller;
use crate::respond::envelope;
use crate::session::{self, SessionClaims};
use keyward_ids::KeyKind;
use keyward_protocol::time::iso8601;
use keyward_protocol::validate::{self, Validator};
use keyward_protocol::{ApiError, Params, STS_NS};
use std::time::{Duration, SystemTime};

/// Every STS action keyward implements.
pub(crate) const ACTIONS: &[&str] = &["GetCallerIdentity", "GetAccessKeyInfo", "GetSessionToken"];

/// Default and limits of GetSessionToken's DurationSeconds.
const SESSION_DEFAULT: i64 = 43_200;
const ROOT_SESSION_MAX: i64 = 3_600;
/// The largest `MinimumSessionTokenSize` (the service model's bound, "must not exceed 4,096
/// bytes"); `SessionTokenUtilization` is the token's size as a percentage of it, our reading of
/// "the maximum allowed session token size".
const MAX_TOKEN_SIZE: i64 = 4_096;

/// Runs STS `action` for `caller` at `now`; returns the response body.
pub(crate) async fn handle(
    app: &App,
    caller: &Caller,
    action: &str,
    p: &Params<'_>,
    rid: &str,
    now: SystemTime,
) -> Result<String, ApiError> {
    let mut v = Validator::new();
    match action {
        "GetCallerIdentity" => {
            v.finish()?;
            authorize_sts(caller, action)?;
            Ok(envelope(
                action,
                STS_NS,
                rid,
                Some(&|w| {
                    w.elem("Arn", caller.arn())
                        .elem("UserId", caller.user_id())
                        .elem("Account", caller.account_id());
                }),
            ))
        }
        "GetAccessKeyInfo" => {
            let key_id = v.string(
                "accessKeyId",
                p.get("AccessKeyId"),
                validate::STS_ACCESS_KEY_ID,
                true,
            );
            v.finish()?;
            authorize_sts(caller, action)?;
            let key_id = key_id.unwrap_or_default();
            let account = match keyward_ids::account_of_key_id(key_id) {
                Some(a) => a,
                // Old-style ids carry no account: answer for keys we know, whatever their state.
                None => match app
                    .store()
                    .get_access_key(key_id)
                    .await
                    .map_err(|e| app.store_error(e))?
                {
                    Some((k, _)) => k.account_id,
                    None => {
                        return Err(ApiError::new(
                            400,
                            "InvalidParameterValue",
                            format!("The access key ID {key_id} is not valid."),
                        ))
                    }
                },
            };
            Ok(envelope(
                action,
                STS_NS,
                rid,
                Some(&|w| {
                    w.elem("Account", &account);
                }),
            ))
        }
        "GetSessionToken" => {
            let duration = v.integer(
                "durationSeconds",
                p.get("DurationSeconds"),
                900,
                129_600,
                false,
            );
            v.string(
                "serialNumber",
                p.get("SerialNumber"),
                validate::SERIAL_NUMBER,
                false,
            );
            v.string("tokenCode", p.get("TokenCode"), validate::TOKEN_CODE, false);
            let min_size = v.integer(
                "minimumSessionTokenSize",
                p.get("MinimumSessionTokenSize"),
                0,
                MAX_TOKEN_SIZE,
                false,
            );
            v.finish()?;
            authorize_sts(caller, action)?;
            if p.get("SerialNumber").is_some() || p.get("TokenCode").is_some() {
                // keyward has no MFA devices, so no serial number is ever associated with the
                // caller: AWS's answer for a serial number that is not (two spaces and all).
                return Err(ApiError::new(
                    403,
                    "AccessDenied",
                    "MultiFactorAuthentication failed, unable to validate MFA code.  Please verify \
                     your MFA serial number is valid and associated with this user.",
                ));
            }
            let secs = if caller.is_root() {
                // Root sessions are capped at one hour, and default to it.
                duration.unwrap_or(ROOT_SESSION_MAX).min(ROOT_SESSION_MAX)
            } else {
                duration.unwrap_or(SESSION_DEFAULT)
            };
            let expires =
                keyward_protocol::time::whole_seconds(now) + Duration::from_secs(secs as u64);
            let claims = SessionClaims {
                account_id: caller.account_id().to_owned(),
                access_key_id: keyward_ids::new_access_key_id(
                    KeyKind::Temporary,
                    caller.account_id(),
                ),
                secret: keyward_sigv4::SecretKey::new(keyward_ids::new_secret_access_key()),
                expires,
                user: caller
                    .user()
                    .map(|u| (u.name.to_owned(), u.user_id.to_owned())),
                source_key_id: caller.access_key_id().to_owned(),
            };
            let min_size = usize::try_from(min_size.unwrap_or(0)).unwrap_or(0);
            let token = session::seal_at_least(app.session_sealer(), &claims, min_size);
            let utilization = (token.len() * 100)
                .div_ceil(MAX_TOKEN_SIZE as usize)
                .min(100);
            Ok(envelope(
                action,
                STS_NS,
                rid,
                Some(&|w| {
                    w.open("Credentials")
                        .elem("AccessKeyId", &claims.access_key_id)
                        .elem("SecretAccessKey", claims.secret.expose())
                        .elem("SessionToken", &token)
                        .elem("Expiration", &iso8601(claims.expires))
                        .close("Credentials")
                        .elem("SessionTokenUtilization", &utilization.to_string())
                        .elem("SessionTokenSize", &token.len().to_string());
                }),
            ))
        }
        _ => Err(crate::app::invalid_action(action, crate::app::STS_VERSION)),
    }
}
