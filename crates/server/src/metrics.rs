//! Counters served in Prometheus text format at `/_keyward/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Authentication failure kinds counted separately.
pub const AUTH_FAILURE_CODES: [&str; 10] = [
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "ExpiredToken",
    "InvalidToken",
    "RequestTimeTooSkewed",
    "AccessDenied",
    "Other",
];

/// The server's counters; all updates are relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by class: 2xx, 4xx, 5xx.
    pub responses: [AtomicU64; 3],
    /// Successful authentications.
    pub auth_ok: AtomicU64,
    /// Failed authentications by [`AUTH_FAILURE_CODES`] index.
    pub auth_failures: [AtomicU64; AUTH_FAILURE_CODES.len()],
    /// Key lookups answered from the cache.
    pub key_cache_hits: AtomicU64,
    /// Key lookups that went to the store.
    pub key_cache_misses: AtomicU64,
    /// Open connections.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
}

impl Metrics {
    /// Counts a response with `status`.
    pub fn response(&self, status: u16) {
        let i = match status {
            500.. => 2,
            400.. => 1,
            _ => 0,
        };
        self.responses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an authentication failure answered with `code`.
    pub fn auth_failure(&self, code: &str) {
        let i = AUTH_FAILURE_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(AUTH_FAILURE_CODES.len() - 1);
        self.auth_failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        s.push_str("# HELP keyward_responses_total Responses sent, by status class.\n# TYPE keyward_responses_total counter\n");
        for (class, a) in ["2xx", "4xx", "5xx"].iter().zip(&self.responses) {
            let _ = writeln!(s, "keyward_responses_total{{class=\"{class}\"}} {}", g(a));
        }
        s.push_str("# HELP keyward_auth_success_total Requests authenticated.\n# TYPE keyward_auth_success_total counter\n");
        let _ = writeln!(s, "keyward_auth_success_total {}", g(&self.auth_ok));
        s.push_str("# HELP keyward_auth_failures_total Authentication failures, by error code.\n# TYPE keyward_auth_failures_total counter\n");
        for (code, a) in AUTH_FAILURE_CODES.iter().zip(&self.auth_failures) {
            let _ = writeln!(s, "keyward_auth_failures_total{{code=\"{code}\"}} {}", g(a));
        }
        s.push_str("# HELP keyward_key_cache_lookups_total Access key lookups, by result.\n# TYPE keyward_key_cache_lookups_total counter\n");
        let _ = writeln!(
            s,
            "keyward_key_cache_lookups_total{{result=\"hit\"}} {}",
            g(&self.key_cache_hits)
        );
        let _ = writeln!(
            s,
            "keyward_key_cache_lookups_total{{result=\"miss\"}} {}",
            g(&self.key_cache_misses)
        );
        s.push_str("# HELP keyward_connections_open Open client connections.\n# TYPE keyward_connections_open gauge\n");
        let _ = writeln!(s, "keyward_connections_open {}", g(&self.connections_open));
        s.push_str("# HELP keyward_connections_total Client connections accepted.\n# TYPE keyward_connections_total counter\n");
        let _ = writeln!(
            s,
            "keyward_connections_total {}",
            g(&self.connections_total)
        );
        s
    }
}
