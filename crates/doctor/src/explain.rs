//! `keyward explain`: what an AWS authentication or credential error means, why it happens, how to find
//! out which cause it is, and which doctor checks detect it. The catalogue is static Rust data
//! ([`CATALOGUE`]), written for this project.

use std::io::Write;

use serde::Serialize;

use crate::{closest, EXIT_FINDING, EXIT_MISUSE, EXIT_OK};

/// `keyward explain`: look up an AWS error code or a pasted error message.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExplainArgs {
    /// An error code (`InvalidClientTokenId`) or a whole pasted message.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub query: Vec<String>,
    /// Print the entry as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Causes, grouped.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Causes {
    /// The key, token or principal itself (unknown, deleted, expired, other account).
    pub identity: &'static [&'static str],
    /// Where the client takes its settings from (env, profiles, files, endpoint, region, clock).
    pub configuration: &'static [&'static str],
    /// Mangled values, wrong shapes, size and time limits.
    pub format_and_limits: &'static [&'static str],
}

/// One catalogue entry.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ErrorEntry {
    /// The error code as AWS or botocore names it.
    pub code: &'static str,
    /// Other names for the same error (other SDKs, protocol dialects).
    pub aliases: &'static [&'static str],
    /// Lower-case fragments of messages that identify the error in pasted text.
    #[serde(skip)]
    pub phrases: &'static [&'static str],
    /// One line.
    pub summary: &'static str,
    /// What the error means.
    pub meaning: &'static str,
    /// Which services answer with it.
    pub services: &'static str,
    /// The HTTP status (or "client-side" for errors raised before any request).
    pub http_status: &'static str,
    /// Why it happens.
    pub causes: Causes,
    /// Steps to find the cause.
    pub diagnosis: &'static [&'static str],
    /// Fixes.
    pub fixes: &'static [&'static str],
    /// Related error codes (each is also in the catalogue).
    pub related: &'static [&'static str],
    /// `keyward doctor` finding codes that detect causes of this error.
    pub doctor_codes: &'static [&'static str],
}

/// The catalogue.
pub const CATALOGUE: &[ErrorEntry] = &[
    ErrorEntry {
        code: "InvalidAccessKeyId",
        aliases: &[],
        phrases: &["access key id you provided does not exist"],
        summary: "S3 does not know the access key id in the request",
        meaning: "The request was signed with an access key id that S3 cannot find. The key may never have existed, may have been deleted or deactivated, or may be a temporary key presented without its session token.",
        services: "Amazon S3 and S3-compatible APIs (other services say InvalidClientTokenId or UnrecognizedClientException for the same problem)",
        http_status: "403",
        causes: Causes {
            identity: &[
                "the key was deleted or made inactive in IAM (rotation, a cleanup script, AWS quarantining an exposed key)",
                "the key belongs to another partition (aws-cn, aws-us-gov) or to an emulator, not to the endpoint you called",
                "a temporary ASIA key is sent without its session token; without the token S3 treats the id as unknown",
            ],
            configuration: &[
                "environment variables override the profile you meant (AWS_ACCESS_KEY_ID beats AWS_PROFILE)",
                "the session token sits in the config file while the keys are in the credentials file, so it is dropped",
                "an endpoint override sends real keys to a local emulator, or emulator keys to AWS",
            ],
            format_and_limits: &[
                "the id was copied with extra characters: a trailing CR from a Windows script, a space, quotes, a zero-width character",
                "the id is truncated or the id and secret are swapped",
            ],
        },
        diagnosis: &[
            "run `keyward doctor` to see which key id is used and where it comes from",
            "compare its last four characters with `aws iam list-access-keys --user-name USER` from a working identity",
            "if it starts with ASIA, check that a session token is configured next to it",
            "check the endpoint: `keyward doctor` shows any endpoint override and its source",
        ],
        fixes: &[
            "unset stale AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN variables",
            "create a new key (`aws iam create-access-key`) and store it with `aws configure`",
            "put the session token in the same file and section as the temporary key",
        ],
        related: &["InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidToken"],
        doctor_codes: &[
            "env-overrides-profile", "key-id-format", "hidden-characters", "key-secret-swapped",
            "temporary-key-without-token", "token-in-other-file", "endpoint-override", "key-unknown",
        ],
    },
    ErrorEntry {
        code: "InvalidClientTokenId",
        aliases: &[],
        phrases: &["security token included in the request is invalid"],
        summary: "the key id or the session token is not valid for this service",
        meaning: "The service could not match the access key id, or the key id together with its session token, to a valid identity. Despite the name it is about the key id as often as about a token.",
        services: "STS, IAM and most Query-protocol services (EC2 says AuthFailure, JSON services UnrecognizedClientException)",
        http_status: "403",
        causes: Causes {
            identity: &[
                "the access key was deleted or deactivated",
                "a session token from an earlier session is attached to a new long-term key",
                "a session token issued by the global STS endpoint is used in an opt-in region that does not accept it",
                "the key belongs to another partition or to an emulator",
            ],
            configuration: &[
                "stale AWS_SESSION_TOKEN / AWS_SECURITY_TOKEN variables next to long-term keys",
                "the token is in one file and the keys in the other, so the token is dropped",
                "environment keys shadow the intended profile",
            ],
            format_and_limits: &[
                "the token or key id was truncated or picked up a trailing newline, CR or quotes",
            ],
        },
        diagnosis: &[
            "run `keyward doctor`: it flags a token next to an AKIA key, a token in the wrong file and env overrides",
            "check whether the key id starts with AKIA (must have no token) or ASIA (must have one)",
            "for opt-in regions, get the token from the regional STS endpoint or enable v2 tokens globally",
        ],
        fixes: &[
            "remove the stale session token (`unset AWS_SESSION_TOKEN`, or delete the aws_session_token line)",
            "request fresh temporary credentials and store key, secret and token together",
            "create a new access key if the old one was deleted",
        ],
        related: &["InvalidAccessKeyId", "UnrecognizedClientException", "AuthFailure", "ExpiredToken"],
        doctor_codes: &[
            "token-on-long-term-key", "token-in-other-file", "temporary-key-without-token",
            "env-overrides-profile", "conflicting-token-vars", "hidden-characters", "key-unknown",
        ],
    },
    ErrorEntry {
        code: "SignatureDoesNotMatch",
        aliases: &[],
        phrases: &["signature we calculated does not match", "credential should be scoped to"],
        summary: "the key id is known, but the signature computed with the secret is wrong",
        meaning: "AWS found the access key id and recomputed the SigV4 signature with the secret it holds; the result differed from the one sent. The secret is wrong or altered, or the request was changed after signing. With the text 'Signature expired' it is a clock problem instead.",
        services: "all services that use SigV4 (JSON services call it InvalidSignatureException)",
        http_status: "403",
        causes: Causes {
            identity: &[
                "the secret belongs to a different key than the id (keys rotated, one half updated)",
            ],
            configuration: &[
                "the local clock is off by more than the allowed skew ('Signature expired')",
                "a proxy or load balancer rewrote the host, path or headers after signing, or added x-amz-* headers (S3: 'There were headers present in the request which were not signed')",
                "a custom endpoint URL differs from the host that receives the request",
                "the request was signed for another service or region than the endpoint's ('Credential should be scoped to correct service: ...' / 'to a valid region'): a signer configured by hand, or an endpoint URL of another service",
            ],
            format_and_limits: &[
                "the secret lost a '/' or '+' when pasted through a shell, URL or CI variable",
                "the secret has a trailing CR, space, quotes or an inline comment in the file",
                "the secret is truncated (not 40 characters)",
            ],
        },
        diagnosis: &[
            "run `keyward doctor` for hidden characters, secret length and where the secret comes from",
            "compare the local clock with a trusted source (`date -u`, a server's Date header)",
            "try the same credentials from a clean shell with only the two variables set",
        ],
        fixes: &[
            "paste the secret again into the credentials file with `aws configure`, not through shell quoting",
            "if the secret is lost, create a new access key; AWS never shows a secret twice",
            "sync the clock (`sudo timedatectl set-ntp true`, `wsl --shutdown` on WSL2)",
        ],
        related: &["InvalidSignatureException", "RequestTimeTooSkewed", "IncompleteSignature"],
        doctor_codes: &["hidden-characters", "secret-format", "key-secret-swapped", "signature-mismatch", "clock-skew"],
    },
    ErrorEntry {
        code: "IncompleteSignature",
        aliases: &[],
        phrases: &["authorization header requires", "incompletesignature"],
        summary: "the Authorization header lacks a required part",
        meaning: "The request carried a SigV4 Authorization header (or presigned query) that is missing Credential, SignedHeaders or Signature, or has them in a broken form. The request did not get as far as checking the key.",
        services: "Query and JSON services (STS, IAM, EC2, DynamoDB, ...)",
        http_status: "400 (403 on some services)",
        causes: Causes {
            identity: &[],
            configuration: &[
                "a hand-written signer or an old library builds the header incorrectly",
                "a signer that sends no X-Amz-Date or Date header, or signs with SigV2 or another scheme (S3: 'AWS authentication requires a valid Date or x-amz-date header', 'Unsupported Authorization Type', 'The authorization mechanism you have provided is not supported')",
                "a proxy truncates long headers",
            ],
            format_and_limits: &[
                "an empty access key id leaves the Credential part empty",
                "a key id or secret with spaces or newlines breaks the header syntax",
            ],
        },
        diagnosis: &[
            "run `keyward doctor` for an empty key id or hidden characters",
            "log the outgoing Authorization header (without the signature) and check its three parts",
        ],
        fixes: &[
            "set a complete key id and secret",
            "use an AWS SDK or a maintained SigV4 library instead of a hand-written signer",
        ],
        related: &["MissingAuthenticationToken", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"],
        doctor_codes: &["empty-key-id", "hidden-characters", "key-id-format"],
    },
    ErrorEntry {
        code: "MissingAuthenticationToken",
        aliases: &["MissingAuthenticationTokenException"],
        phrases: &["missing authentication token"],
        summary: "the request was not signed at all (or went to a path that does not exist)",
        meaning: "The service received a request with no signature. From API Gateway the same error often just means the URL path or method does not exist.",
        services: "Query and JSON services; API Gateway",
        http_status: "403",
        causes: Causes {
            identity: &[],
            configuration: &[
                "the client ran with `--no-sign-request` or an anonymous configuration",
                "no credentials were found and the tool sent the request unsigned",
                "API Gateway: wrong stage, path or HTTP method",
            ],
            format_and_limits: &[],
        },
        diagnosis: &[
            "run `keyward doctor` to confirm that credentials resolve at all",
            "for API Gateway, compare the URL with the deployed stage and resource",
        ],
        fixes: &["configure credentials (`aws configure`)", "fix the URL path or method for API Gateway"],
        related: &["IncompleteSignature", "NoCredentialProviders"],
        doctor_codes: &["no-credentials", "profile-not-found", "partial-credentials"],
    },
    ErrorEntry {
        code: "ExpiredToken",
        aliases: &["ExpiredTokenException", "TokenRefreshRequired"],
        phrases: &["security token included in the request is expired", "provided token has expired", "token has expired"],
        summary: "the session token's lifetime is over",
        meaning: "The temporary credentials (ASIA key + session token) were valid once but have passed their expiry time. Nothing is wrong with their format.",
        services: "every service that accepts temporary credentials (S3 says ExpiredToken too; JSON services ExpiredTokenException)",
        http_status: "400 (403 on some services)",
        causes: Causes {
            identity: &["the AssumeRole / GetSessionToken / SSO session ended (default one hour, at most 12 or 36 hours)"],
            configuration: &[
                "old temporary credentials were exported into the environment or written to a file and never refreshed",
                "a tool wrote credentials to a file and a long job outlived them",
            ],
            format_and_limits: &["the local clock is ahead, so fresh tokens look expired sooner"],
        },
        diagnosis: &[
            "run `keyward doctor`: it shows where the token comes from and any expiry it can read",
            "check AWS_CREDENTIAL_EXPIRATION or the tool that issued the token",
        ],
        fixes: &[
            "get new temporary credentials (re-run the assume-role, `aws sso login`, or your SAML tool)",
            "use a profile with role_arn or sso_session so the CLI refreshes by itself",
        ],
        related: &["InvalidToken", "InvalidClientTokenId", "RequestTimeTooSkewed"],
        doctor_codes: &["credentials-expired", "token-expired", "env-overrides-profile", "clock-skew"],
    },
    ErrorEntry {
        code: "InvalidToken",
        aliases: &[],
        phrases: &["token is malformed or otherwise invalid"],
        summary: "S3 cannot decode the session token",
        meaning: "S3 received an x-amz-security-token that it cannot parse or that does not belong to the key id. Other services report the same situation as InvalidClientTokenId.",
        services: "Amazon S3",
        http_status: "400",
        causes: Causes {
            identity: &["the token belongs to other temporary credentials than the key id"],
            configuration: &["a stale AWS_SESSION_TOKEN is attached to new keys", "the token is in another file than the keys"],
            format_and_limits: &["the token was truncated (shell line length, copy and paste) or has quotes or a newline"],
        },
        diagnosis: &[
            "run `keyward doctor` for stale tokens, tokens on long-term keys and hidden characters",
            "check that key id, secret and token come from the same STS response",
        ],
        fixes: &["store key id, secret and token from one STS response together", "remove stale token variables"],
        related: &["InvalidClientTokenId", "ExpiredToken", "InvalidAccessKeyId"],
        doctor_codes: &["token-on-long-term-key", "token-in-other-file", "hidden-characters", "conflicting-token-vars"],
    },
    ErrorEntry {
        code: "RequestTimeTooSkewed",
        aliases: &["SignatureExpired", "RequestExpired"],
        phrases: &["difference between the request time and the current time is too large", "signature expired", "request has expired"],
        summary: "the local clock and AWS's differ too much",
        meaning: "Every SigV4 request carries its signing time. AWS rejects requests whose time is more than 5 minutes (15 for some services) away from its own. The keys may be perfectly fine.",
        services: "S3 (RequestTimeTooSkewed), Query services (SignatureDoesNotMatch with 'Signature expired'), EC2 (RequestExpired), JSON services (InvalidSignatureException)",
        http_status: "403 (400 on some services)",
        causes: Causes {
            identity: &[],
            configuration: &[
                "the clock of a VM, WSL2 or Docker Desktop stopped while the host slept",
                "NTP is disabled or blocked",
                "a presigned URL or a queued request is sent long after it was signed",
            ],
            format_and_limits: &["the wrong time zone was set as if it were UTC"],
        },
        diagnosis: &[
            "compare `date -u` with an external source",
            "the live `keyward doctor` compares the local clock with the server's Date header",
        ],
        fixes: &[
            "sync the clock: `sudo timedatectl set-ntp true` or `sudo chronyc makestep`",
            "WSL2: `wsl --shutdown` and reopen; Docker Desktop: restart it",
        ],
        related: &["SignatureDoesNotMatch", "InvalidSignatureException", "ExpiredToken"],
        doctor_codes: &["clock-skew"],
    },
    ErrorEntry {
        code: "AuthFailure",
        aliases: &[],
        phrases: &["not able to validate the provided access credentials"],
        summary: "EC2 could not validate the credentials",
        meaning: "EC2's catch-all for authentication problems: unknown or inactive key, bad token, or a signature it cannot verify.",
        services: "Amazon EC2 and services sharing its API style",
        http_status: "401",
        causes: Causes {
            identity: &["the key is deleted or inactive", "the key is from another partition"],
            configuration: &["stale tokens, env overrides or a token dropped because it was in the other file", "the clock is off"],
            format_and_limits: &["mangled secret or key id (hidden characters, truncation)"],
        },
        diagnosis: &[
            "run `keyward doctor` for the offline causes",
            "call `aws sts get-caller-identity` with the same credentials: STS names the failure more precisely",
        ],
        fixes: &["fix what the doctor reports", "create a new key if the old one was deleted"],
        related: &["InvalidClientTokenId", "SignatureDoesNotMatch", "RequestTimeTooSkewed"],
        doctor_codes: &["key-unknown", "signature-mismatch", "token-on-long-term-key", "hidden-characters", "clock-skew"],
    },
    ErrorEntry {
        code: "UnrecognizedClientException",
        aliases: &[],
        phrases: &["unrecognizedclientexception"],
        summary: "a JSON-protocol service does not know the key id or token",
        meaning: "The JSON-protocol spelling of InvalidClientTokenId: the access key id or session token is not valid.",
        services: "DynamoDB, Kinesis, Lambda, CloudWatch Logs, Secrets Manager and other JSON-protocol services",
        http_status: "400",
        causes: Causes {
            identity: &["deleted or inactive key", "a token from another session or partition", "emulator keys sent to AWS"],
            configuration: &["stale env tokens", "token in the other file", "missing endpoint override for a local emulator (DynamoDB Local, LocalStack)"],
            format_and_limits: &["hidden characters or truncation in key id or token"],
        },
        diagnosis: &[
            "run `keyward doctor`; check the endpoint row when you meant to use an emulator",
        ],
        fixes: &["remove stale tokens", "set AWS_ENDPOINT_URL for emulators", "create a new key if needed"],
        related: &["InvalidClientTokenId", "InvalidSignatureException", "ExpiredToken"],
        doctor_codes: &["token-on-long-term-key", "token-in-other-file", "endpoint-override", "key-unknown", "hidden-characters"],
    },
    ErrorEntry {
        code: "InvalidSignatureException",
        aliases: &[],
        phrases: &["invalidsignatureexception"],
        summary: "a JSON-protocol service rejected the signature",
        meaning: "The JSON-protocol spelling of SignatureDoesNotMatch (and of a skewed clock): the key id is known but the signature does not verify, or the signing time is too far off.",
        services: "DynamoDB, Kinesis, Lambda and other JSON-protocol services",
        http_status: "400 (403 on some services)",
        causes: Causes {
            identity: &["the secret does not belong to the key id"],
            configuration: &["the clock is off", "a proxy altered the request"],
            format_and_limits: &["mangled secret: lost '/' or '+', CR, spaces, quotes, truncation"],
        },
        diagnosis: &["run `keyward doctor` for secret format and hidden characters", "check the clock"],
        fixes: &["store the secret again with `aws configure`", "sync the clock"],
        related: &["SignatureDoesNotMatch", "RequestTimeTooSkewed", "UnrecognizedClientException"],
        doctor_codes: &["secret-format", "hidden-characters", "signature-mismatch", "clock-skew"],
    },
    ErrorEntry {
        code: "AccessDenied",
        aliases: &["AccessDeniedException", "UnauthorizedOperation", "Forbidden"],
        phrases: &["is not authorized to perform", "access denied"],
        summary: "the credentials work, but this identity may not do this",
        meaning: "Authentication succeeded; authorization failed. A policy (identity, resource, permission boundary, SCP, session policy or a quarantine policy AWS attached to an exposed key) does not allow the action on that resource.",
        services: "all services",
        http_status: "403",
        causes: Causes {
            identity: &[
                "you are not who you think: env keys or another profile are in use",
                "the key is from another account than the resource",
                "AWS attached its compromised-key quarantine policy to the user",
            ],
            configuration: &["the wrong profile or region is selected", "a role session lacks the permissions of its source"],
            format_and_limits: &["an explicit deny, an SCP or a boundary limits the action"],
        },
        diagnosis: &[
            "run `keyward doctor` to see which credentials are used and which account the key belongs to",
            "`aws sts get-caller-identity` shows the ARN being evaluated",
            "read the full message: it names the action, the resource and often the policy type that denied",
        ],
        fixes: &["use the intended profile (`--profile`, or unset overriding env keys)", "grant the action in the right policy"],
        related: &["InvalidClientTokenId", "ExpiredToken"],
        doctor_codes: &["env-overrides-profile", "account-mismatch", "profile-not-found"],
    },
    ErrorEntry {
        code: "MultiFactorAuthentication",
        aliases: &[],
        phrases: &["multifactorauthentication failed"],
        summary: "STS refused the MFA serial number or one-time code (arrives as AccessDenied)",
        meaning: "GetSessionToken or AssumeRole was called with SerialNumber and TokenCode, and STS could not accept them. The code is AccessDenied with one of two messages: \"with invalid MFA one time pass code\" (the device is right, the code is not) or \"unable to validate MFA code. Please verify your MFA serial number is valid and associated with this user\" (the serial number does not name an MFA device of the calling user).",
        services: "AWS STS (GetSessionToken, AssumeRole); tools that wrap them (aws-vault, the CLI's mfa_serial profiles)",
        http_status: "403",
        causes: Causes {
            identity: &[
                "the call is signed by another user than the device's owner: env keys or another profile override the one you meant",
                "the serial is of a device in another account than the key (copied from another profile)",
                "the device was removed or re-registered: its ARN changed (the name is chosen at registration)",
            ],
            configuration: &[
                "mfa_serial in the profile names a device that is not this user's, or the source_profile's user",
                "a FIDO security key (passkey) is given: the API accepts only virtual or hardware TOTP devices",
            ],
            format_and_limits: &[
                "a code already used: STS accepts each code once, so a second call in the same 30 s window fails",
                "a mistyped or expired code (each lasts about 30 seconds)",
                "the authenticator's clock (the phone's, not this machine's) drifted, or a hardware token is out of sync",
                "the serial is the device's name, not its ARN (arn:aws:iam::ACCOUNT:mfa/NAME)",
            ],
        },
        diagnosis: &[
            "run `keyward doctor`: it shows which keys sign the call (an env override, a profile) and their account",
            "`aws iam list-mfa-devices --user-name NAME` lists the serial numbers registered for that user",
            "\"invalid MFA one time pass code\" means the serial is right: wait for the next code and try once",
        ],
        fixes: &[
            "use the serial number exactly as list-mfa-devices prints it, for the user whose keys sign the call",
            "wait for a fresh code instead of retrying with the same one",
            "set the phone's time to automatic; resync a hardware token (`aws iam resync-mfa-device`)",
        ],
        related: &["AccessDenied", "ExpiredToken"],
        doctor_codes: &["env-overrides-profile", "account-mismatch", "profile-not-found"],
    },
    ErrorEntry {
        code: "AuthorizationHeaderMalformed",
        aliases: &[],
        phrases: &["authorization header is malformed"],
        summary: "S3 rejected the credential scope (usually the region) of the signature",
        meaning: "S3 could parse the Authorization header but something in it is wrong, most often the region in the credential scope: the request was signed for one region and the bucket lives in another. An empty key id causes it too.",
        services: "Amazon S3",
        http_status: "400",
        causes: Causes {
            identity: &[],
            configuration: &["the region is unset or different from the bucket's", "a custom endpoint points at another region"],
            format_and_limits: &["empty or space-containing access key id", "a hand-built date or scope string"],
        },
        diagnosis: &["run `keyward doctor` for the region row and its source", "read the expected region from the error message"],
        fixes: &["set the bucket's region (`--region`, AWS_REGION, or `region =` in the profile)"],
        related: &["IncompleteSignature", "SignatureDoesNotMatch"],
        doctor_codes: &["empty-key-id", "hidden-characters", "endpoint-override"],
    },
    ErrorEntry {
        code: "NoCredentialProviders",
        aliases: &["NoCredentialsError", "CredentialsProviderError"],
        phrases: &["unable to locate credentials", "no valid providers in chain", "no valid credential sources", "could not load credentials from any providers", "failed to retrieve credentials"],
        summary: "no credentials were found anywhere in the chain (client-side)",
        meaning: "The client looked through every provider (environment, profile files, role and SSO settings, container and instance metadata) and none produced credentials. No request was sent.",
        services: "client-side (botocore: 'Unable to locate credentials'; Go SDK: NoCredentialProviders)",
        http_status: "none (raised before any request)",
        causes: Causes {
            identity: &[],
            configuration: &[
                "the profile has no keys, or the files are at another path (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, sudo changing HOME)",
                "the profile's section name is wrong for its file ([x] in config, [profile x] in credentials)",
                "a misspelled key (aws_access_key instead of aws_access_key_id)",
                "a file that cannot be read is silently treated as empty",
            ],
            format_and_limits: &["a BOM or another encoding makes the file unreadable to the parser"],
        },
        diagnosis: &["run `keyward doctor`: it shows both file paths, whether they parsed, and every section and key it found"],
        fixes: &["`aws configure` (or `aws configure --profile NAME`)", "fix the section name or key spelling the doctor points at"],
        related: &["PartialCredentialsError", "ProfileNotFound", "ConfigParseError"],
        doctor_codes: &["no-credentials", "section-name", "misspelled-key", "file-unreadable", "file-permissions", "partial-credentials"],
    },
    ErrorEntry {
        code: "PartialCredentialsError",
        aliases: &["PartialCredentials"],
        phrases: &["partial credentials found in"],
        summary: "a key id was found without its secret (client-side)",
        meaning: "A provider found an access key id but no secret access key, and botocore stops the whole chain instead of looking further.",
        services: "client-side (botocore, boto3, AWS CLI)",
        http_status: "none (raised before any request)",
        causes: Causes {
            identity: &[],
            configuration: &[
                "AWS_ACCESS_KEY_ID is exported but AWS_SECRET_ACCESS_KEY is empty or missing",
                "a profile has aws_access_key_id but the secret line is misspelled or in another section",
            ],
            format_and_limits: &["the secret is on an indented line, which makes it a nested block instead of a value"],
        },
        diagnosis: &["run `keyward doctor`: it names the provider and the line of the lonely key id"],
        fixes: &["add the secret next to the key id", "or remove the key id so the chain can move on"],
        related: &["NoCredentialProviders", "ConfigParseError"],
        doctor_codes: &["partial-credentials", "misspelled-key", "continuation-line"],
    },
    ErrorEntry {
        code: "ProfileNotFound",
        aliases: &[],
        phrases: &["the config profile (", "profilenotfound"],
        summary: "the selected profile is in neither file (client-side)",
        meaning: "A profile was selected explicitly (--profile, AWS_PROFILE or AWS_DEFAULT_PROFILE) and neither the config nor the credentials file has it. The CLI fails even when environment keys are set.",
        services: "client-side (botocore, boto3, AWS CLI)",
        http_status: "none (raised before any request)",
        causes: Causes {
            identity: &[],
            configuration: &[
                "a typo or case difference in the profile name (section names are case-sensitive)",
                "the profile is written [x] in the config file (needs [profile x]) or [profile x] in the credentials file",
                "AWS_PROFILE left over from another project",
                "the files are read from another HOME or path",
            ],
            format_and_limits: &["a [profile a b] header without quotes is ignored"],
        },
        diagnosis: &["run `keyward doctor`: it lists close profile names and wrong section headers"],
        fixes: &["select an existing profile, or create it with `aws configure --profile NAME`", "unset a stale AWS_PROFILE"],
        related: &["NoCredentialProviders", "ConfigParseError"],
        doctor_codes: &["profile-not-found", "section-name"],
    },
    ErrorEntry {
        code: "ConfigParseError",
        aliases: &["ConfigParseError"],
        phrases: &["unable to parse config file"],
        summary: "botocore could not parse the config or credentials file (client-side)",
        meaning: "Python's configparser rejected one of the two shared files. botocore names only the file; the cause is one of a few strict-mode rules.",
        services: "client-side (botocore, boto3, AWS CLI)",
        http_status: "none (raised before any request)",
        causes: Causes {
            identity: &[],
            configuration: &["a section or key appears twice (keys are case-insensitive)", "text before the first [section]"],
            format_and_limits: &[
                "a UTF-8 byte order mark or a UTF-16 file",
                "a line without = or :",
                "an empty value followed by indented lines that are not key = value",
            ],
        },
        diagnosis: &["run `keyward doctor`: it names the rule, the line and the column"],
        fixes: &["apply the fix the doctor prints for each parse finding"],
        related: &["NoCredentialProviders", "ProfileNotFound", "PartialCredentialsError"],
        doctor_codes: &["bom", "not-utf8", "duplicate-section", "duplicate-key", "no-section-header", "invalid-line", "continuation-line"],
    },
];

/// The result of looking something up.
#[derive(Debug)]
pub enum Lookup {
    /// One entry matched.
    Found(&'static ErrorEntry),
    /// Nothing matched; `code` is the code extracted from the query (if any), `suggestions` the
    /// closest known codes.
    Unknown {
        /// What was looked up.
        code: String,
        /// Close codes, best first.
        suggestions: Vec<String>,
    },
}

fn by_code(code: &str) -> Option<&'static ErrorEntry> {
    CATALOGUE.iter().find(|e| {
        e.code.eq_ignore_ascii_case(code) || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(code))
    })
}

/// The code in `An error occurred (CODE) when calling ...`.
fn code_in_parens(q: &str) -> Option<&str> {
    let start = q.find("error occurred (")? + "error occurred (".len();
    let len = q[start..].find(')')?;
    Some(&q[start..start + len])
}

/// Looks up a code or a pasted message.
pub fn lookup(query: &str) -> Lookup {
    let q = query.trim();
    if let Some(e) = by_code(q) {
        return Lookup::Found(e);
    }
    let lower = q.to_lowercase();
    // "Signature expired" arrives as SignatureDoesNotMatch but is a clock problem.
    if lower.contains("signature expired") {
        if let Some(e) = by_code("RequestTimeTooSkewed") {
            return Lookup::Found(e);
        }
    }
    // So does an MFA failure, as AccessDenied; its message tells it apart.
    if lower.contains("multifactorauthentication failed") {
        if let Some(e) = by_code("MultiFactorAuthentication") {
            return Lookup::Found(e);
        }
    }
    // S3 answers some signing mistakes with AccessDenied or InvalidArgument (codes that name no
    // signing problem); their messages tell them apart.
    for (phrase, code) in [
        // A header added after signing (a proxy, or client code): the request was changed.
        (
            "headers present in the request which were not signed",
            "SignatureDoesNotMatch",
        ),
        // The signer left out the date, or used a scheme S3 does not take.
        (
            "aws authentication requires a valid date",
            "IncompleteSignature",
        ),
        ("unsupported authorization type", "IncompleteSignature"),
        (
            "authorization mechanism you have provided is not supported",
            "IncompleteSignature",
        ),
    ] {
        if lower.contains(phrase) {
            if let Some(e) = by_code(code) {
                return Lookup::Found(e);
            }
        }
    }
    let paren = code_in_parens(q);
    if let Some(e) = paren.and_then(by_code) {
        return Lookup::Found(e);
    }
    for e in CATALOGUE {
        if e.phrases.iter().any(|p| lower.contains(p)) {
            return Lookup::Found(e);
        }
    }
    for word in q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.len() > 3 {
            if let Some(e) = by_code(word) {
                return Lookup::Found(e);
            }
        }
    }
    let code = paren.unwrap_or(q).to_string();
    let names = CATALOGUE
        .iter()
        .flat_map(|e| std::iter::once(e.code).chain(e.aliases.iter().copied()));
    let max = (code.len() / 3).max(3);
    let mut suggestions = closest(&code, names.clone(), max);
    if suggestions.is_empty() {
        // Prefix or substring hints for very short or partial input.
        let lc = code.to_lowercase();
        suggestions = names
            .filter(|n| !lc.is_empty() && n.to_lowercase().contains(&lc))
            .map(str::to_string)
            .collect();
    }
    suggestions.truncate(5);
    Lookup::Unknown { code, suggestions }
}

/// Runs `keyward explain`: writes the entry (or suggestions) to `out`, returns the exit code.
pub fn run_explain(args: &ExplainArgs, out: &mut dyn Write) -> i32 {
    let query = args.query.join(" ");
    if query.trim().is_empty() {
        let _ = writeln!(out, "error: give an error code or paste an error message");
        return EXIT_MISUSE;
    }
    let res = match lookup(&query) {
        Lookup::Found(e) => {
            let r = if args.json {
                serde_json::to_writer_pretty(&mut *out, e)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                write_entry(e, out)
            };
            r.map(|()| EXIT_OK)
        }
        Lookup::Unknown { code, suggestions } => {
            let r = if args.json {
                let v = serde_json::json!({ "error": "unknown", "query": code, "suggestions": suggestions });
                serde_json::to_writer_pretty(&mut *out, &v)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                let mut r = writeln!(out, "No entry for {code:?}.");
                if r.is_ok() && !suggestions.is_empty() {
                    r = writeln!(out, "Did you mean: {}?", suggestions.join(", "));
                }
                if r.is_ok() {
                    let all: Vec<&str> = CATALOGUE.iter().map(|e| e.code).collect();
                    r = writeln!(out, "Known codes: {}", all.join(", "));
                }
                r
            };
            r.map(|()| EXIT_FINDING)
        }
    };
    res.unwrap_or(EXIT_MISUSE)
}

fn write_entry(e: &ErrorEntry, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{} — {}", e.code, e.summary)?;
    if !e.aliases.is_empty() {
        writeln!(out, "Also seen as: {}", e.aliases.join(", "))?;
    }
    writeln!(out, "HTTP status: {}", e.http_status)?;
    writeln!(out, "Services: {}", e.services)?;
    writeln!(out, "\nWhat it means\n  {}", e.meaning)?;
    writeln!(out, "\nCauses")?;
    for (title, list) in [
        ("Identity", e.causes.identity),
        ("Configuration", e.causes.configuration),
        ("Format and limits", e.causes.format_and_limits),
    ] {
        if list.is_empty() {
            continue;
        }
        writeln!(out, "  {title}")?;
        for c in list {
            writeln!(out, "    - {c}")?;
        }
    }
    writeln!(out, "\nHow to find the cause")?;
    for (i, d) in e.diagnosis.iter().enumerate() {
        writeln!(out, "  {}. {d}", i + 1)?;
    }
    writeln!(out, "\nFixes")?;
    for f in e.fixes {
        writeln!(out, "  - {f}")?;
    }
    writeln!(out, "\nRelated: {}", e.related.join(", "))?;
    writeln!(
        out,
        "Detected by `keyward doctor` as: {}",
        e.doctor_codes.join(", ")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[test]
    fn every_entry_is_complete_and_consistent() {
        let mut seen = std::collections::HashSet::new();
        for e in CATALOGUE {
            assert!(seen.insert(e.code), "duplicate {}", e.code);
            for (what, s) in [
                ("summary", e.summary),
                ("meaning", e.meaning),
                ("services", e.services),
                ("http_status", e.http_status),
            ] {
                assert!(!s.trim().is_empty(), "{}: empty {what}", e.code);
            }
            let c = e.causes;
            assert!(
                !(c.identity.is_empty()
                    && c.configuration.is_empty()
                    && c.format_and_limits.is_empty()),
                "{}: no causes",
                e.code
            );
            assert!(!e.diagnosis.is_empty(), "{}: no diagnosis", e.code);
            assert!(!e.fixes.is_empty(), "{}: no fixes", e.code);
            assert!(!e.related.is_empty(), "{}: no related", e.code);
            assert!(!e.doctor_codes.is_empty(), "{}: no doctor codes", e.code);
            for d in e.doctor_codes {
                assert!(
                    Code::parse(d).is_some(),
                    "{}: unknown doctor code {d}",
                    e.code
                );
            }
            for r in e.related {
                assert!(
                    by_code(r).is_some(),
                    "{}: related {r} not in catalogue",
                    e.code
                );
                assert_ne!(*r, e.code);
            }
            for p in e.phrases {
                assert_eq!(
                    p.to_lowercase(),
                    *p,
                    "{}: phrases are matched lower-case",
                    e.code
                );
            }
        }
    }

    #[test]
    fn the_required_codes_are_there() {
        for c in [
            "InvalidAccessKeyId",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "MissingAuthenticationToken",
            "ExpiredToken",
            "InvalidToken",
            "RequestTimeTooSkewed",
            "AuthFailure",
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "AccessDenied",
            "AuthorizationHeaderMalformed",
            "NoCredentialProviders",
            "PartialCredentialsError",
            "ProfileNotFound",
            "ConfigParseError",
        ] {
            assert!(by_code(c).is_some(), "{c}");
        }
    }

    fn found(q: &str) -> &'static str {
        match lookup(q) {
            Lookup::Found(e) => e.code,
            Lookup::Unknown { .. } => panic!("{q}: not found"),
        }
    }

    #[test]
    fn finds_codes_and_pasted_messages() {
        assert_eq!(found("invalidclienttokenid"), "InvalidClientTokenId");
        assert_eq!(
            found("An error occurred (InvalidAccessKeyId) when calling the ListBuckets operation: The AWS Access Key Id you provided does not exist in our records."),
            "InvalidAccessKeyId"
        );
        assert_eq!(found("Unable to locate credentials. You can configure credentials by running \"aws configure\"."), "NoCredentialProviders");
        assert_eq!(
            found("Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY"),
            "PartialCredentialsError"
        );
        assert_eq!(
            found("The config profile (dev) could not be found"),
            "ProfileNotFound"
        );
        assert_eq!(
            found("Unable to parse config file: /home/u/.aws/credentials"),
            "ConfigParseError"
        );
        assert_eq!(
            found("An error occurred (SignatureDoesNotMatch) when calling the GetCallerIdentity operation: Signature expired: 20240101T000000Z is now earlier than 20240101T001500Z (20240101T002000Z - 15 min.)"),
            "RequestTimeTooSkewed"
        );
        assert_eq!(found("ExpiredTokenException"), "ExpiredToken");
        // A signing scope for another service, pasted without its code.
        assert_eq!(
            found("Credential should be scoped to correct service: 'sts'."),
            "SignatureDoesNotMatch"
        );
        // S3's signing mistakes that arrive as AccessDenied or InvalidArgument.
        assert_eq!(
            found("An error occurred (AccessDenied) when calling the ListBuckets operation: There were headers present in the request which were not signed"),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            found("An error occurred (AccessDenied) when calling the ListBuckets operation: AWS authentication requires a valid Date or x-amz-date header"),
            "IncompleteSignature"
        );
        assert_eq!(
            found("An error occurred (InvalidArgument) when calling the ListBuckets operation: Unsupported Authorization Type"),
            "IncompleteSignature"
        );
        // Both of STS's MFA messages, which arrive as AccessDenied.
        assert_eq!(
            found("An error occurred (AccessDenied) when calling the GetSessionToken operation: MultiFactorAuthentication failed with invalid MFA one time pass code. "),
            "MultiFactorAuthentication"
        );
        assert_eq!(
            found("An error occurred (AccessDenied) when calling the GetSessionToken operation: MultiFactorAuthentication failed, unable to validate MFA code.  Please verify your MFA serial number is valid and associated with this user."),
            "MultiFactorAuthentication"
        );
        assert_eq!(
            found("An error occurred (AccessDenied) when calling the ListUsers operation: User: arn:aws:iam::123456789012:user/a is not authorized to perform: iam:ListUsers"),
            "AccessDenied"
        );
    }

    #[test]
    fn unknown_codes_get_suggestions_and_exit_1() {
        match lookup("InvalidAccesKeyID") {
            Lookup::Unknown { suggestions, .. } => assert_eq!(suggestions[0], "InvalidAccessKeyId"),
            Lookup::Found(e) => panic!("found {}", e.code),
        }
        let mut out = Vec::new();
        let args = ExplainArgs {
            query: vec!["SignatureDoesntMatch".into()],
            json: false,
        };
        assert_eq!(run_explain(&args, &mut out), EXIT_FINDING);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("SignatureDoesNotMatch"));
    }
}
