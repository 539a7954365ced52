//! What a caller may do, until a policy engine exists.
//!
//! - An account's root may do everything in its own account.
//! - An IAM user may call the STS operations, `GetUser` on itself and manage its own access keys
//!   (AWS's documented self-service set).
//! - Temporary credentials from `GetSessionToken` (no MFA) may not call IAM, which AWS answers with
//!   `InvalidClientTokenId`, nor `GetSessionToken` again.
//! - Nobody reaches another account's entities: handlers only ever look up the caller's account.

use crate::caller::Caller;
use keyward_protocol::ApiError;

/// The IAM actions an IAM user may perform on itself.
const SELF_SERVICE: &[&str] = &[
    "GetUser",
    "CreateAccessKey",
    "ListAccessKeys",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "GetAccessKeyLastUsed",
];

/// The `AccessDenied` AWS answers for an action no identity-based policy allows.
pub fn access_denied(caller: &Caller, action: &str, resource: &str) -> ApiError {
    ApiError::new(
        403,
        "AccessDenied",
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
            caller.arn()
        ),
    )
}

/// Checks an IAM `action` on `target_user` (the user the action addresses, `None` for account-level
/// actions or the caller itself); `resource` is the ARN shown in a denial.
pub fn authorize_iam(
    caller: &Caller,
    action: &str,
    target_user: Option<&str>,
    resource: &str,
) -> Result<(), ApiError> {
    if caller.is_session() {
        return Err(ApiError::invalid_client_token_id());
    }
    match caller.user_name() {
        None => Ok(()),
        Some(name) => {
            let on_self = target_user.is_none_or(|t| t.eq_ignore_ascii_case(name));
            if on_self && SELF_SERVICE.contains(&action) {
                Ok(())
            } else {
                Err(access_denied(caller, &format!("iam:{action}"), resource))
            }
        }
    }
}

/// The STS actions that session credentials (from GetSessionToken) may call.
const SESSION_STS_ACTIONS: &[&str] = &[
    "AssumeRole",
    "GetCallerIdentity",
    "GetScopedCredentials",
    "GetWebIdentityToken",
    "GetDelegatedAccessToken",
];

/// Checks an STS `action`.
pub fn authorize_sts(caller: &Caller, action: &str) -> Result<(), ApiError> {
    // GetSessionToken's documentation: with its credentials "you cannot call any STS API except
    // AssumeRole, GetCallerIdentity, ..."; the refusal's wording is the one AWS sends for
    // GetSessionToken (and GetFederationToken) called so.
    if caller.is_session() && !SESSION_STS_ACTIONS.contains(&action) {
        return Err(ApiError::new(
            403,
            "AccessDenied",
            format!("Cannot call {action} with session credentials"),
        ));
    }
    Ok(())
}
