//! The seam for the live half of `keyward doctor`: one signed STS call with the resolved credentials.
//!
//! The doctor resolves credentials and the endpoint offline, then hands both to a [`Prober`].
//! [`LiveProber`] sends a SigV4-signed `sts:GetCallerIdentity` ([`crate::aws`]); [`NotBuiltProber`]
//! contacts nothing and answers [`ProbeOutcome::Unavailable`].

use serde::Serialize;

use crate::aws;
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

    /// Everything the probe found out, e.g. an identity *and* a clock skew measured on the same
    /// answer. `region` is the resolved region (used to sign for a custom endpoint). By default the one
    /// outcome of [`Prober::probe`].
    fn probe_all(
        &self,
        creds: &ResolvedCredentials,
        endpoint: &Endpoint,
        region: Option<&str>,
    ) -> Vec<ProbeOutcome> {
        let _ = region;
        vec![self.probe(creds, endpoint)]
    }
}

/// The real probe: one signed `sts:GetCallerIdentity` to the resolved endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveProber;

impl Prober for LiveProber {
    fn probe(&self, creds: &ResolvedCredentials, endpoint: &Endpoint) -> ProbeOutcome {
        self.probe_all(creds, endpoint, None)
            .into_iter()
            .next()
            .unwrap_or(ProbeOutcome::Unavailable {
                reason: "no outcome".into(),
            })
    }

    fn probe_all(
        &self,
        creds: &ResolvedCredentials,
        endpoint: &Endpoint,
        region: Option<&str>,
    ) -> Vec<ProbeOutcome> {
        let region = aws::aws_region_of(&endpoint.url)
            .or_else(|| region.filter(|r| !r.is_empty()).map(str::to_string))
            .unwrap_or_else(|| "us-east-1".to_string());
        let c = aws::Credentials {
            access_key_id: creds.access_key_id.value.clone(),
            secret_access_key: creds.secret_access_key.value.expose().to_string(),
            session_token: creds
                .session_token
                .as_ref()
                .map(|t| t.value.expose().to_string()),
        };
        let client = match aws::Client::new(&endpoint.url, "sts", &region, c) {
            Ok(c) => c,
            Err(reason) => return vec![ProbeOutcome::Unreachable { reason }],
        };
        outcomes(client.call("GetCallerIdentity", &[]))
    }
}

/// Maps the answer of `GetCallerIdentity` to probe outcomes (the main one first, then any clock skew).
pub(crate) fn outcomes(r: Result<aws::Reply, aws::AwsError>) -> Vec<ProbeOutcome> {
    match r {
        Ok(reply) => {
            let mut out = vec![match aws::parse_identity(&reply.xml) {
                Some(id) => ProbeOutcome::Identity(id),
                None => ProbeOutcome::Unreachable {
                    reason: "the answer to GetCallerIdentity has no Arn/UserId/Account".into(),
                },
            }];
            if let Some(server) = reply.server_date {
                out.push(ProbeOutcome::ClockSkew {
                    skew_seconds: aws::skew_from_date(reply.signed_at, reply.elapsed, server),
                });
            }
            out
        }
        Err(aws::AwsError::Transport(reason)) => vec![ProbeOutcome::Unreachable { reason }],
        Err(aws::AwsError::Service {
            code: aws_error,
            message,
            server_date,
            signed_at,
            ..
        }) => {
            if let Some(skew) = aws::skew_from_message(&message) {
                return vec![ProbeOutcome::ClockSkew { skew_seconds: skew }];
            }
            let code = match aws_error.as_str() {
                "InvalidClientTokenId" | "InvalidAccessKeyId" | "UnrecognizedClientException"
                | "InvalidToken" => Code::KeyUnknown,
                "SignatureDoesNotMatch" | "InvalidSignatureException" => Code::SignatureMismatch,
                "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => Code::TokenExpired,
                "RequestTimeTooSkewed" => Code::ClockSkew,
                _ => {
                    return vec![ProbeOutcome::Unreachable {
                        reason: format!(
                            "it answered {aws_error} ({message}) instead of a GetCallerIdentity result: is this an STS endpoint?"
                        ),
                    }]
                }
            };
            let mut out = vec![ProbeOutcome::Rejected {
                code,
                aws_error,
                message,
            }];
            if let Some(server) = server_date {
                out.push(ProbeOutcome::ClockSkew {
                    skew_seconds: aws::secs_between(signed_at, server),
                });
            }
            out
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn answers_map_to_outcomes_with_the_measured_skew() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ok = aws::Reply {
            xml: "<Arn>arn:aws:iam::123456789012:user/a</Arn><UserId>AIDAX</UserId><Account>123456789012</Account>".into(),
            server_date: Some(t - Duration::from_secs(400)),
            signed_at: t,
            elapsed: Duration::from_millis(2),
        };
        let out = outcomes(Ok(ok));
        assert!(matches!(&out[0], ProbeOutcome::Identity(id) if id.user_id == "AIDAX"));
        assert_eq!(out[1], ProbeOutcome::ClockSkew { skew_seconds: 400 });

        let err = |code: &str, message: &str| aws::AwsError::Service {
            status: 403,
            code: code.into(),
            message: message.into(),
            server_date: None,
            signed_at: t,
        };
        let first = |e| outcomes(Err(e)).into_iter().next().unwrap();
        for (aws_code, code) in [
            ("InvalidClientTokenId", Code::KeyUnknown),
            ("InvalidAccessKeyId", Code::KeyUnknown),
            ("SignatureDoesNotMatch", Code::SignatureMismatch),
            ("ExpiredToken", Code::TokenExpired),
        ] {
            assert!(
                matches!(first(err(aws_code, "m")), ProbeOutcome::Rejected { code: c, .. } if c == code),
                "{aws_code}"
            );
        }
        assert_eq!(
            first(err(
                "SignatureDoesNotMatch",
                "Signature expired: 20220127T001427Z is now earlier than 20220127T014428Z (20220127T015928Z - 15 min.)"
            )),
            ProbeOutcome::ClockSkew { skew_seconds: -6301 }
        );
        assert!(matches!(
            first(err("NotFound", "m")),
            ProbeOutcome::Unreachable { .. }
        ));
        assert!(matches!(
            first(aws::AwsError::Transport("connection refused".into())),
            ProbeOutcome::Unreachable { .. }
        ));
    }
}
