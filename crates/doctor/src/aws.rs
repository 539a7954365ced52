//! A minimal blocking client for the AWS query protocol (IAM, STS): SigV4-signed form POSTs and a tiny
//! XML reader. Used by the live probe of `keyward doctor` and by `keyward rotate`.
//!
//! TLS (rustls, webpki roots) is only initialised when an `https` endpoint is actually called.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue};
use keyward_sigv4::sign::{sign_headers, SigningParams};
use keyward_sigv4::SecretKey;

/// Connect timeout for every call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-call timeout.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials to sign with. The secret is never printed (`Debug` masks it).
#[derive(Clone)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"****")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "****"),
            )
            .finish()
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsError {
    /// The service answered with an error document.
    Service {
        /// HTTP status.
        status: u16,
        /// The AWS error code (`InvalidClientTokenId`, ...).
        code: String,
        /// The message.
        message: String,
        /// The server's `Date` header.
        server_date: Option<SystemTime>,
        /// When the request was signed (local clock).
        signed_at: SystemTime,
    },
    /// No HTTP answer (DNS, connect, TLS, timeout) or an unreadable one.
    Transport(String),
}

impl AwsError {
    /// The AWS error code, if the service answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } => Some(code),
            AwsError::Transport(_) => None,
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsError::Service {
                status,
                code,
                message,
                ..
            } => write!(f, "{code} (HTTP {status}): {message}"),
            AwsError::Transport(r) => write!(f, "{r}"),
        }
    }
}

/// A successful answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The XML body.
    pub xml: String,
    /// The server's `Date` header.
    pub server_date: Option<SystemTime>,
    /// When the request was signed (local clock).
    pub signed_at: SystemTime,
    /// How long the call took.
    pub elapsed: Duration,
}

/// A service endpoint with credentials: `call(action, params)` sends one signed query-protocol request.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    host: String,
    path: String,
    service: &'static str,
    region: String,
    creds: Credentials,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("service", &self.service)
            .field("region", &self.region)
            .field("creds", &self.creds)
            .finish()
    }
}

/// The API version of a query-protocol service.
fn api_version(service: &str) -> &'static str {
    match service {
        "iam" => "2010-05-08",
        _ => "2011-06-15",
    }
}

/// Splits `http(s)://host[:port][/path]` into the URL to call, the `Host` header (default port dropped,
/// as clients send it) and the path.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = authority
        .strip_suffix(default_port)
        .unwrap_or(authority)
        .to_ascii_lowercase();
    Ok((format!("{scheme}://{host}{path}"), host, path.to_string()))
}

/// AWS's signing region for an AWS endpoint host (`sts.eu-west-1.amazonaws.com` → `eu-west-1`,
/// the global `sts.amazonaws.com` and `iam.amazonaws.com` → `us-east-1`), or `None` for other hosts.
pub fn aws_region_of(url: &str) -> Option<String> {
    let (_, host, _) = split_url(url).ok()?;
    let host = host.split(':').next().unwrap_or("");
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let mut parts = rest.split('.');
    let _service = parts.next()?;
    match parts.next() {
        None => Some(if host.ends_with(".cn") {
            "cn-north-1".into()
        } else {
            "us-east-1".into()
        }),
        Some(region) => Some(region.to_string()),
    }
}

impl Client {
    /// A client for `service` (`sts` or `iam`) at `endpoint_url`, signing for `region`.
    pub fn new(
        endpoint_url: &str,
        service: &'static str,
        region: &str,
        creds: Credentials,
    ) -> Result<Client, String> {
        let (url, host, path) = split_url(endpoint_url)?;
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(TOTAL_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.into(),
            url,
            host,
            path,
            service,
            region: region.to_string(),
            creds,
        })
    }

    /// The credentials this client signs with.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// The URL called.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `Action=action&Version=...&params` and returns the XML of a 2xx answer.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<Reply, AwsError> {
        let mut body = format!("Action={action}&Version={}", api_version(self.service));
        for (k, v) in params {
            body.push('&');
            body.push_str(&form_encode(k));
            body.push('=');
            body.push_str(&form_encode(v));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "host",
            HeaderValue::from_str(&self.host).map_err(|e| AwsError::Transport(e.to_string()))?,
        );
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let secret = SecretKey::new(self.creds.secret_access_key.clone());
        let signed_at = SystemTime::now();
        let params = SigningParams {
            access_key_id: &self.creds.access_key_id,
            secret: &secret,
            session_token: self.creds.session_token.as_deref(),
            region: &self.region,
            service: self.service,
            time: signed_at,
        };
        sign_headers(
            "POST",
            &self.path,
            "",
            &mut headers,
            body.as_bytes(),
            &params,
        );
        let mut req = self.agent.post(&self.url);
        for (name, value) in &headers {
            req = req.header(name.as_str(), value.as_bytes());
        }
        let started = Instant::now();
        let mut resp = req.send(body.as_bytes()).map_err(|e| {
            let mut reason = transport_reason(&e);
            if self.url.starts_with("https://") && reason.contains("InvalidContentType") {
                reason
                    .push_str(" (the server does not speak TLS: is it a plain http:// endpoint?)");
            }
            AwsError::Transport(reason)
        })?;
        let status = resp.status().as_u16();
        let server_date = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(keyward_sigv4::parse_http_date);
        let xml = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| AwsError::Transport(format!("reading the answer: {e}")))?;
        let elapsed = started.elapsed();
        if (200..300).contains(&status) {
            return Ok(Reply {
                xml,
                server_date,
                signed_at,
                elapsed,
            });
        }
        let code = xml_text(&xml, "Code").unwrap_or_else(|| format!("HTTP{status}"));
        let message = xml_text(&xml, "Message")
            .or_else(|| xml_text(&xml, "message"))
            .unwrap_or_else(|| format!("HTTP {status} with no AWS error document"));
        Err(AwsError::Service {
            status,
            code,
            message,
            server_date,
            signed_at,
        })
    }
}

fn transport_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found (DNS)".into(),
        other => other.to_string(),
    }
}

/// `application/x-www-form-urlencoded` value encoding (space as `%20`, which AWS accepts).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<tag>...</tag>` in `xml`, entities decoded.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    xml_blocks(xml, tag).into_iter().next().map(unescape)
}

/// The inner text of every `<tag>...</tag>` in `xml` (not nested in one another), undecoded.
pub fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The caller identity from a `GetCallerIdentity` answer.
pub fn parse_identity(xml: &str) -> Option<crate::Identity> {
    Some(crate::Identity {
        account: xml_text(xml, "Account")?,
        arn: xml_text(xml, "Arn")?,
        user_id: xml_text(xml, "UserId")?,
    })
}

/// Local minus server time in seconds, measured from the `Date` header (1 s resolution).
pub fn skew_from_date(signed_at: SystemTime, elapsed: Duration, server: SystemTime) -> i64 {
    let local_mid = signed_at + elapsed / 2;
    secs_between(local_mid, server)
}

/// `a - b` in whole seconds (rounded towards zero).
pub(crate) fn secs_between(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The skew stated by AWS's own refusal: `Signature expired: R is now earlier than E (S - 15 min.)` or
/// `Signature not yet current: R is still later than E (S + 15 min.)`. Returns request minus server time.
pub fn skew_from_message(message: &str) -> Option<i64> {
    if !(message.starts_with("Signature expired")
        || message.starts_with("Signature not yet current"))
    {
        return None;
    }
    let stamp = |s: &str| -> Option<SystemTime> { keyward_sigv4::parse_amz_date(s) };
    let request = message
        .split_whitespace()
        .find_map(|w| stamp(w.trim_end_matches([',', '.'])))?;
    let open = message.rfind('(')?;
    let server = message[open + 1..]
        .split_whitespace()
        .next()
        .and_then(stamp)?;
    Some(secs_between(request, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_like_clients_send_them() {
        assert_eq!(
            split_url("http://127.0.0.1:4599").unwrap(),
            (
                "http://127.0.0.1:4599/".into(),
                "127.0.0.1:4599".into(),
                "/".into()
            )
        );
        assert_eq!(
            split_url("HTTPS://STS.amazonaws.com:443/x?y").unwrap().1,
            "sts.amazonaws.com"
        );
        assert!(split_url("ftp://x").is_err());
        assert_eq!(
            aws_region_of("https://sts.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            aws_region_of("https://iam.amazonaws.com").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(aws_region_of("http://localhost:4599"), None);
    }

    #[test]
    fn reads_errors_and_identity() {
        let e = r#"<ErrorResponse xmlns="x"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>
            <Message>The security token &amp; so on.</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
        assert_eq!(xml_text(e, "Code").as_deref(), Some("InvalidClientTokenId"));
        assert_eq!(
            xml_text(e, "Message").as_deref(),
            Some("The security token & so on.")
        );
        let ok = "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:root</Arn>\
                  <UserId>123456789012</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
        let id = parse_identity(ok).unwrap();
        assert_eq!(id.arn, "arn:aws:iam::123456789012:root");
        assert_eq!(
            xml_blocks("<m>a</m><m>b</m>", "m"),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn skew_from_aws_messages() {
        let past = "Signature expired: 20220127T001427Z is now earlier than 20220127T014428Z (20220127T015928Z - 15 min.)";
        assert_eq!(skew_from_message(past), Some(-(60 + 45) * 60 - 1));
        let future = "Signature not yet current: 20220127T031427Z is still later than 20220127T021428Z (20220127T015928Z + 15 min.)";
        assert_eq!(skew_from_message(future), Some(75 * 60 - 1));
        assert_eq!(
            skew_from_message("The request signature we calculated"),
            None
        );
        assert_eq!(form_encode("a b/c+"), "a%20b%2Fc%2B");
    }
}
