//! The seam for the live half of `keyward doctor`: one signed STS call with the resolved credentials.
//!
//! The doctor resolves credentials and the endpoint offline, then hands both to a [`Prober`]. The real
//! prober (a SigV4-signed `sts:GetCallerIdentity`, built on `keyward-sigv4`) comes in a later change;
//! until then [`NotBuiltProber`] answers [`ProbeOutcome::Unavailable`] and the doctor says so.

use serde::Serialize;

use crate::finding::Code;
use crate::resolve::{Endpoint, ResolvedCredentials};

/// Who AWS says the credentials belong to (`GetCallerIdentity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The 12-digit account.
    pub account: String,
    /// The caller's ARN.
    pub arn: String,
    /// The unique id (`AIDA...`, `AROA...:session`).
    pub user_id: String,
}

/// What a live probe found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The credentials work.
    Identity(Identity),
    /// AWS refused them. `code` is one of the live finding codes ([`Code::KeyUnknown`],
    /// [`Code::SignatureMismatch`], [`Code::TokenExpired`], [`Code::ClockSkew`]).
    Rejected {
        /// The doctor finding this maps to.
        code: Code,
        /// The AWS error code, e.g. `InvalidClientTokenId`.
        aws_error: String,
        /// AWS's message.
        message: String,
    },
    /// The local clock differs from the server's `Date` by this many seconds (positive: local ahead).
    ClockSkew {
        /// Local minus server time, in seconds.
        skew_seconds: i64,
    },
    /// No HTTP response (DNS, TCP, TLS).
    Unreachable {
        /// What failed.
        reason: String,
    },
    /// The probe did not run.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// Performs the live check. Implementations must not print or log the secret.
pub trait Prober {
    /// Calls the endpoint with the credentials and reports what happened.
    fn probe(&self, creds: &ResolvedCredentials, endpoint: &Endpoint) -> ProbeOutcome;
}

/// The prober used until the signed STS call exists: it never contacts anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotBuiltProber;

impl Prober for NotBuiltProber {
    fn probe(&self, _: &ResolvedCredentials, _: &Endpoint) -> ProbeOutcome {
        ProbeOutcome::Unavailable {
            reason: "the live probe (a signed sts:GetCallerIdentity call) is not built yet".into(),
        }
    }
}
