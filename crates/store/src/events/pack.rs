//! The stored form of a batch of audit events: one compact blob per batch and account.
//!
//! A server writes thousands of events per second, nearly all alike (same operation, caller, user
//! agent, region). One row per event cost more than the request it recorded; one blob per batch,
//! with each repeated string written once per batch, costs about a tenth of that.
//!
//! Layout (all integers LEB128 varints unless noted):
//!
//! ```text
//! blob  := VERSION(u8) event*
//! event := time flags(u8) present(varint) id id string*
//! time  := zigzag(time_ms - previous event's time_ms, 0 for the first)   -- format 4
//!        | time_ms(i64 little-endian, 8 bytes)                          -- formats 2 and 3
//! id    := 1 followed by 16 bytes                        -- a UUID
//!        | 3 followed by 10 bytes                        -- a UUID v7 of the event's millisecond:
//!                                                           its last 10 bytes (format 4)
//!        | (len << 1) followed by len UTF-8 bytes        -- any other id
//! string:= (len << 1)      followed by len UTF-8 bytes   -- a new value
//!        | (slot << 1)|1                                 -- a recent value of the same field
//!        | (RECENT << 1)|1                               -- ARN only: derived (format 3)
//! ```
//!
//! Format 4 writes each event's time as the difference from the previous one (one or two bytes
//! where eight were), and an event id made by keyward (a UUID v7 whose first six bytes are the
//! event's millisecond) as its ten other bytes: 13 of ~110 bytes per event with many callers.
//!
//! An IAM user's ARN with the path `/`, `arn:aws:iam::ACCOUNT:user/NAME`, is not stored (format
//! 3): it is rebuilt from the row's account and the event's user name. With many keys in use most
//! events have a caller of their own, whose strings are written in full; the ARN was the longest.
//! Blobs of format 2 (without it) are read as before.
//!
//! `flags` holds read-only, session and the identity type; `present` has one bit per optional
//! field, in [`OPTIONAL`] order; the required strings come first, in [`AuditRecord`] order. Each
//! field but the two ids remembers its last [`RECENT`] distinct new values (newest in slot 0); a
//! value equal to one of them is written as its slot. That costs a few short comparisons per field
//! instead of hashing, and catches what repeats in a trail: the same operation, caller, ARN, user
//! agent and region, from a handful of clients at a time. Decoding checks every length and slot and
//! fails with `Corrupt` instead of panicking.

use std::time::SystemTime;

use super::{AuditRecord, EventId, EventRef, IdentityType, UuidText};
use crate::model::{from_millis, to_millis};
use crate::StoreError;

/// Format version written first in every blob.
const VERSION: u8 = 4;
/// Still read: format 4 with each time in 8 bytes and every UUID in 16.
const VERSION_3: u8 = 3;
/// The first version written by keyward, still read: format 3 without derived ARNs.
const VERSION_2: u8 = 2;

const READ_ONLY: u8 = 1;
const SESSION: u8 = 2;
/// Two bits of identity type, shifted by this.
const IDENTITY_SHIFT: u8 = 2;

/// Optional fields, in `present` bit order.
const OPTIONAL: usize = 11;
/// Fields that remember recent values: event name, source, region, then the optional ones.
const REMEMBERING: usize = 3 + OPTIONAL;
/// Recent values remembered per field.
const RECENT: usize = 4;

/// The last [`RECENT`] distinct new values of each remembering field, newest first.
struct Recent<'a>([[Option<&'a str>; RECENT]; REMEMBERING]);

impl<'a> Recent<'a> {
    fn new() -> Self {
        Recent([[None; RECENT]; REMEMBERING])
    }

    fn get(&self, field: usize, slot: usize) -> Option<&'a str> {
        self.0[field].get(slot).copied().flatten()
    }

    fn push(&mut self, field: usize, s: &'a str) {
        let ring = &mut self.0[field];
        ring.rotate_right(1);
        ring[0] = Some(s);
    }
}

/// The tag of an id stored as 16 bytes (a reference tag, which ids never use otherwise).
const UUID_TAG: u64 = 1;
/// The tag of a UUID v7 of the event's own millisecond, stored as its last 10 bytes (format 4).
const UUID7_TAG: u64 = 3;
/// The tag of a derived ARN (a reference past the last slot, which strings never use otherwise).
const DERIVED_ARN_TAG: u64 = ((RECENT as u64) << 1) | 1;
/// The ARN's place among the optional fields.
const ARN: usize = 1;

/// Whether `arn` is what an IAM user event's account and user name make it (path `/`).
fn is_derived_arn(account_id: Option<&str>, user_name: Option<&str>, arn: &str) -> bool {
    let (Some(account), Some(name)) = (account_id, user_name) else {
        return false;
    };
    arn.strip_prefix("arn:aws:iam::")
        .and_then(|r| r.strip_prefix(account))
        .and_then(|r| r.strip_prefix(":user/"))
        == Some(name)
}
pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of each byte as a lowercase hex digit, 0xff for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Where each of a UUID's 16 bytes starts in its hyphenated form.
const UUID_DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// The 16 bytes of a UUID in its lowercase hyphenated form (the form that round-trips exactly).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    // Two events' ids per request: one table look-up per digit, one check at the end.
    let mut bad = 0u8;
    for (o, &at) in out.iter_mut().zip(UUID_DIGITS.iter()) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(b[at])],
            HEX_VALUE[usize::from(b[at + 1])],
        );
        bad |= hi | lo;
        *o = hi << 4 | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// The last [`RECENT`] distinct new values of each remembering field while packing, newest first,
/// as places in the blob being written (so a packer owns no copies and borrows nothing).
#[derive(Clone)]
struct Written([[(u32, u32); RECENT]; REMEMBERING]);

impl Written {
    fn find(&self, out: &[u8], field: usize, s: &str) -> Option<usize> {
        // Values of a field that differ (key ids, ARNs, user names) mostly differ at the end: the
        // length and last byte settle most mismatches without a full comparison.
        let b = s.as_bytes();
        let last = b.last().copied();
        self.0[field].iter().position(|&(at, len)| {
            let (at, len) = (at as usize, len as usize);
            len == b.len()
                && len > 0
                && out.get(at + len - 1).copied() == last
                && out.get(at..at + len) == Some(b)
        })
    }

    fn push(&mut self, field: usize, at: usize, len: usize) {
        let ring = &mut self.0[field];
        ring.rotate_right(1);
        // A blob never reaches 4 GiB (batches are capped); a place that does not fit is simply
        // not remembered.
        ring[0] = match (u32::try_from(at), u32::try_from(len)) {
            (Ok(a), Ok(l)) if l > 0 => (a, l),
            _ => (0, 0),
        };
    }
}

/// Builds one blob from events in stored order.
#[derive(Clone)]
pub(crate) struct Packer {
    out: Vec<u8>,
    recent: Written,
    min_ms: i64,
    max_ms: i64,
    count: u32,
    /// The last event's time (ms), which the next one's is written against.
    prev_ms: i64,
    /// Format 4 (always, but in tests of the older formats' reading).
    compact: bool,
}

impl Packer {
    /// A packer writing format 3 (8-byte times, 16-byte UUIDs), for tests of its reading.
    #[cfg(test)]
    fn format_3() -> Packer {
        let mut p = Packer::new();
        p.out[0] = VERSION_3;
        p.compact = false;
        p
    }

    #[cfg(test)]
    pub(crate) fn new() -> Packer {
        Packer::with_buffer(Vec::new())
    }

    /// A packer writing into `out` (cleared first; its capacity is what is reused).
    pub(crate) fn with_buffer(mut out: Vec<u8>) -> Packer {
        out.clear();
        out.push(VERSION);
        Packer {
            out,
            recent: Written([[(0, 0); RECENT]; REMEMBERING]),
            min_ms: i64::MAX,
            max_ms: i64::MIN,
            count: 0,
            prev_ms: 0,
            compact: true,
        }
    }

    /// Appends one event.
    pub(crate) fn push(&mut self, e: &EventRef<'_>) {
        let ms = to_millis(e.time);
        self.min_ms = self.min_ms.min(ms);
        self.max_ms = self.max_ms.max(ms);
        self.count += 1;
        if self.compact {
            varint(&mut self.out, zigzag(ms.wrapping_sub(self.prev_ms)));
            self.prev_ms = ms;
        } else {
            self.out.extend_from_slice(&ms.to_le_bytes());
        }
        let mut flags = (e.identity_type as u8) << IDENTITY_SHIFT;
        if e.read_only {
            flags |= READ_ONLY;
        }
        if e.session {
            flags |= SESSION;
        }
        self.out.push(flags);
        let optional = optional_fields(e);
        let present = optional
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .fold(0u64, |acc, (i, _)| acc | 1 << i);
        varint(&mut self.out, present);
        // Ids are unique per event: never worth remembering, but a UUID fits in 16 bytes.
        self.id(e.event_id, ms);
        self.id(e.request_id, ms);
        self.string(0, e.event_name);
        self.string(1, e.event_source);
        self.string(2, e.region);
        let derived = e.identity_type == IdentityType::IamUser
            && e.arn
                .is_some_and(|arn| is_derived_arn(e.account_id, e.user_name, arn));
        for (i, v) in optional.into_iter().enumerate() {
            if let Some(v) = v {
                if i == ARN && derived {
                    varint(&mut self.out, DERIVED_ARN_TAG);
                } else {
                    self.string(3 + i, v);
                }
            }
        }
    }

    fn literal(&mut self, s: &str) {
        varint(&mut self.out, (s.len() as u64) << 1);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// An id: tag [`UUID7_TAG`] and 10 bytes for a UUID v7 of millisecond `ms`, tag [`UUID_TAG`]
    /// and 16 bytes for another lowercase hyphenated UUID, else a literal.
    fn id(&mut self, id: EventId<'_>, ms: i64) {
        match id {
            EventId::Uuid(b) => self.uuid(&b, ms),
            EventId::Text(s) => match uuid_bytes(s) {
                Some(b) => self.uuid(&b, ms),
                None => self.literal(s),
            },
        }
    }

    /// A UUID's 16 bytes, as [`Packer::id`] writes them.
    fn uuid(&mut self, b: &[u8; 16], ms: i64) {
        if self.compact && b[6] >> 4 == 7 && uuid7_ms(b) == ms {
            varint(&mut self.out, UUID7_TAG);
            self.out.extend_from_slice(&b[6..]);
        } else {
            varint(&mut self.out, UUID_TAG);
            self.out.extend_from_slice(b);
        }
    }

    fn string(&mut self, field: usize, s: &str) {
        match self.recent.find(&self.out, field, s) {
            Some(slot) => varint(&mut self.out, ((slot as u64) << 1) | 1),
            None => {
                varint(&mut self.out, (s.len() as u64) << 1);
                let at = self.out.len();
                self.out.extend_from_slice(s.as_bytes());
                self.recent.push(field, at, s.len());
            }
        }
    }

    /// Events pushed so far.
    pub(crate) fn len(&self) -> usize {
        self.count as usize
    }

    /// The blob, its oldest and newest event times (ms) and its number of events.
    pub(crate) fn finish(self) -> (Vec<u8>, i64, i64, u32) {
        (self.out, self.min_ms, self.max_ms, self.count)
    }
}

fn optional_fields<'a>(e: &EventRef<'a>) -> [Option<&'a str>; OPTIONAL] {
    [
        e.principal_id,
        e.arn,
        e.access_key_id,
        e.user_name,
        e.source_ip,
        e.user_agent,
        e.error_code,
        e.error_message,
        e.request_parameters,
        e.response_elements,
        e.stored_json,
    ]
}

/// The millisecond in the first six bytes of a UUID v7.
fn uuid7_ms(b: &[u8; 16]) -> i64 {
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    i64::from_be_bytes(ms)
}

/// A signed difference as an unsigned number small for small magnitudes of either sign.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("a stored batch of audit events is damaged: {what}"))
}

/// Reads the events of a blob back, in stored order, each with the account of its row.
pub(crate) fn unpack(blob: &[u8], account_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
    let mut r = Reader {
        b: blob,
        at: 0,
        recent: Recent::new(),
        derived_arns: true,
        compact: true,
        prev_ms: 0,
    };
    match r.byte()? {
        VERSION => {}
        VERSION_3 => r.compact = false,
        VERSION_2 => (r.compact, r.derived_arns) = (false, false),
        _ => return Err(corrupt("unknown format version")),
    }
    let mut events = Vec::new();
    while r.at < r.b.len() {
        events.push(r.event(account_id)?);
    }
    Ok(events)
}

struct Reader<'b> {
    b: &'b [u8],
    at: usize,
    recent: Recent<'b>,
    /// The blob's format has derived ARNs (format 3).
    derived_arns: bool,
    /// The blob's format has relative times and short UUID v7s (format 4).
    compact: bool,
    /// The last event's time (ms), format 4's times are relative to.
    prev_ms: i64,
}

impl<'b> Reader<'b> {
    fn byte(&mut self) -> Result<u8, StoreError> {
        let v = *self.b.get(self.at).ok_or_else(|| corrupt("cut short"))?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("a number is too long"))
    }

    /// `n` raw bytes.
    fn raw(&mut self, n: usize) -> Result<&'b [u8], StoreError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| corrupt("cut short"))?;
        let b = &self.b[self.at..end];
        self.at = end;
        Ok(b)
    }

    /// An id of an event at `ms`: 16 bytes of a UUID, the last 10 of a UUID v7 of `ms` (format
    /// 4), or written in full.
    fn id(&mut self, ms: i64) -> Result<String, StoreError> {
        let tag = self.varint()?;
        if tag == UUID_TAG {
            let mut b = [0u8; 16];
            b.copy_from_slice(self.raw(16)?);
            return Ok(UuidText::new(&b).to_string());
        }
        if tag == UUID7_TAG && self.compact {
            let ms = u64::try_from(ms)
                .ok()
                .filter(|&m| m >> 48 == 0)
                .ok_or_else(|| corrupt("a UUID v7 outside its time range"))?;
            let mut b = [0u8; 16];
            b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
            b[6..].copy_from_slice(self.raw(10)?);
            return Ok(UuidText::new(&b).to_string());
        }
        if tag & 1 == 1 {
            return Err(corrupt("a reference where a value belongs"));
        }
        Ok(self.bytes(tag >> 1)?.to_owned())
    }

    fn bytes(&mut self, len: u64) -> Result<&'b str, StoreError> {
        let len = usize::try_from(len).map_err(|_| corrupt("bad length"))?;
        std::str::from_utf8(self.raw(len)?).map_err(|_| corrupt("not UTF-8"))
    }

    /// A value of a remembering field: in full (then remembered) or a recent one.
    fn string(&mut self, field: usize) -> Result<&'b str, StoreError> {
        let tag = self.varint()?;
        self.string_tagged(field, tag)
    }

    /// [`Reader::string`] once its tag is read.
    fn string_tagged(&mut self, field: usize, tag: u64) -> Result<&'b str, StoreError> {
        if tag & 1 == 1 {
            let slot = usize::try_from(tag >> 1).map_err(|_| corrupt("bad reference"))?;
            return self
                .recent
                .get(field, slot)
                .ok_or_else(|| corrupt("bad reference"));
        }
        let s = self.bytes(tag >> 1)?;
        self.recent.push(field, s);
        Ok(s)
    }

    fn event(&mut self, account_id: &str) -> Result<AuditRecord, StoreError> {
        let ms = if self.compact {
            let ms = self.prev_ms.wrapping_add(unzigzag(self.varint()?));
            self.prev_ms = ms;
            ms
        } else {
            let mut ms = [0u8; 8];
            ms.copy_from_slice(self.raw(8)?);
            i64::from_le_bytes(ms)
        };
        let time: SystemTime = from_millis(ms);
        let flags = self.byte()?;
        let identity_type = match (flags >> IDENTITY_SHIFT) & 3 {
            0 => IdentityType::Unknown,
            1 => IdentityType::Root,
            2 => IdentityType::IamUser,
            _ => return Err(corrupt("unknown identity type")),
        };
        let present = self.varint()?;
        if present >> OPTIONAL != 0 {
            return Err(corrupt("unknown fields"));
        }
        let event_id = self.id(ms)?;
        let request_id = self.id(ms)?;
        let event_name = self.string(0)?.to_owned();
        let event_source = self.string(1)?.to_owned();
        let region = self.string(2)?.to_owned();
        let mut opt: [Option<String>; OPTIONAL] = Default::default();
        let mut derived = false;
        for (i, slot) in opt.iter_mut().enumerate() {
            if present & (1 << i) != 0 {
                let tag = self.varint()?;
                if i == ARN && self.derived_arns && tag == DERIVED_ARN_TAG {
                    derived = true;
                    continue;
                }
                *slot = Some(self.string_tagged(3 + i, tag)?.to_owned());
            }
        }
        let [principal_id, mut arn, access_key_id, user_name, source_ip, user_agent, error_code, error_message, request_parameters, response_elements, stored_json] =
            opt;
        if derived {
            let Some(name) = user_name
                .as_deref()
                .filter(|_| identity_type == IdentityType::IamUser)
            else {
                return Err(corrupt("a derived ARN without an IAM user's name"));
            };
            arn = Some(format!("arn:aws:iam::{account_id}:user/{name}"));
        }
        Ok(AuditRecord {
            account_id: Some(account_id.to_owned()),
            time,
            event_id,
            event_name,
            event_source,
            region,
            identity_type,
            principal_id,
            arn,
            access_key_id,
            user_name,
            session: flags & SESSION != 0,
            read_only: flags & READ_ONLY != 0,
            source_ip,
            user_agent,
            error_code,
            error_message,
            request_parameters,
            response_elements,
            request_id,
            stored_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            account_id: Some("123456789012".into()),
            time: UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + i),
            event_id: format!("id-{i}"),
            event_name: "GetCallerIdentity".into(),
            event_source: "sts.amazonaws.com".into(),
            region: "us-east-1".into(),
            identity_type: if i % 2 == 0 {
                IdentityType::IamUser
            } else {
                IdentityType::Root
            },
            principal_id: Some("AIDAEXAMPLE".into()),
            arn: Some("arn:aws:iam::123456789012:user/bob".into()),
            access_key_id: Some(format!("AKIA{}", i % 3)),
            user_name: (i % 2 == 0).then(|| "bob".into()),
            session: i % 3 == 0,
            read_only: i % 4 != 0,
            source_ip: Some("127.0.0.1".into()),
            user_agent: Some("aws-cli/2 é".into()),
            error_code: (i == 5).then(|| "AccessDenied".into()),
            error_message: (i == 5).then(|| "no".into()),
            request_parameters: (i == 7).then(|| "{\"userName\":\"bob\"}".into()),
            response_elements: None,
            request_id: match i % 3 {
                0 => format!("req-{i}"),
                1 => format!("0192f0a1-7c3e-7abc-9def-{i:012}"),
                // Upper case: not the canonical form, so kept as text.
                _ => format!("0192F0A1-7C3E-7ABC-9DEF-{i:012}"),
            },
            stored_json: (i == 9).then(|| "{\"eventVersion\":\"1.08\"}".into()),
        }
    }

    /// An event of IAM user `name` (with `path`) of account 123456789012, key `AKIA{i}`.
    fn user_event(i: u64, path: &str, name: &str) -> AuditRecord {
        AuditRecord {
            identity_type: IdentityType::IamUser,
            principal_id: Some(format!("AIDA{i:017}")),
            arn: Some(format!("arn:aws:iam::123456789012:user{path}{name}")),
            access_key_id: Some(format!("AKIA{i:016}")),
            user_name: Some(name.into()),
            session: false,
            error_code: None,
            error_message: None,
            request_parameters: None,
            stored_json: None,
            ..record(i)
        }
    }

    fn pack_3(events: &[AuditRecord]) -> Vec<u8> {
        let mut p = Packer::format_3();
        for e in events {
            p.push(&e.as_event());
        }
        p.finish().0
    }

    fn pack(events: &[AuditRecord]) -> Vec<u8> {
        let mut p = Packer::new();
        for e in events {
            p.push(&e.as_event());
        }
        p.finish().0
    }

    #[test]
    fn arns_of_users_with_the_root_path_are_rebuilt_not_stored() {
        // Each event its own user, as with many keys in use.
        let plain: Vec<_> = (0..500)
            .map(|i| user_event(i, "/", &format!("user{i:05}")))
            .collect();
        let blob = pack(&plain);
        assert_eq!(unpack(&blob, "123456789012").unwrap(), plain);
        let arn = plain[7].arn.as_deref().unwrap();
        let blob_text = String::from_utf8_lossy(&blob);
        assert!(!blob_text.contains(arn), "a derived ARN is not stored");
        // With a path, or when the name or account does not match, the ARN is stored as it is.
        let mut other: Vec<_> = (0..500)
            .map(|i| user_event(i, "/division/", &format!("user{i:05}")))
            .collect();
        other[1].user_name = Some("someone-else".into());
        other[2].arn = Some("arn:aws:iam::210987654321:user/user00002".into());
        other[3].user_name = None;
        let other_blob = pack(&other);
        assert_eq!(unpack(&other_blob, "123456789012").unwrap(), other);
        assert!(String::from_utf8_lossy(&other_blob).contains("user/division/user00007"));
        assert!(
            blob.len() + 500 * 30 < other_blob.len(),
            "{} vs {}",
            blob.len(),
            other_blob.len()
        );
        // A root event's ARN is never derived.
        let root = vec![AuditRecord {
            identity_type: IdentityType::Root,
            arn: Some("arn:aws:iam::123456789012:user/bob".into()),
            ..user_event(1, "/", "bob")
        }];
        assert_eq!(unpack(&pack(&root), "123456789012").unwrap(), root);
    }

    #[test]
    fn blobs_of_formats_2_and_3_are_still_read() {
        // Format 2 is format 3 without derived ARNs: such a blob, labelled 2, reads the same.
        let events: Vec<_> = (0..50)
            .map(|i| user_event(i, "/path/", &format!("u{i}")))
            .collect();
        let mut blob = pack_3(&events);
        assert_eq!(unpack(&blob, "123456789012").unwrap(), events);
        blob[0] = VERSION_2;
        assert_eq!(unpack(&blob, "123456789012").unwrap(), events);
        // A derived ARN's tag means nothing in format 2: a damaged blob, not a guess.
        let mut derived = pack_3(&[user_event(1, "/", "u1")]);
        derived[0] = VERSION_2;
        assert!(unpack(&derived, "123456789012").is_err());
        // A derived ARN needs an IAM user's name to be rebuilt from: time, flags (IAM user),
        // present (the ARN only), two empty ids, three empty strings, then the ARN's tag.
        let mut nameless_blob = vec![VERSION_3];
        nameless_blob.extend_from_slice(&[0; 8]);
        nameless_blob
            .extend_from_slice(&[(IdentityType::IamUser as u8) << IDENTITY_SHIFT, 1 << ARN]);
        nameless_blob.extend_from_slice(&[0; 5]);
        nameless_blob.push(DERIVED_ARN_TAG as u8);
        assert!(unpack(&nameless_blob, "123456789012").is_err());
        nameless_blob[9] = (IdentityType::Root as u8) << IDENTITY_SHIFT;
        assert!(unpack(&nameless_blob, "123456789012").is_err());
        // The ARN follows the stored user name: it is rebuilt, not kept.
        let mut nameless = pack(&[user_event(1, "/", "u1")]);
        let name_at = nameless.len()
            - nameless
                .windows(3)
                .rev()
                .position(|w| w == b"\x04u1")
                .map(|p| p + 3)
                .unwrap();
        nameless[name_at + 1] = b'X';
        nameless[name_at + 2] = b'Y';
        let read = unpack(&nameless, "123456789012").unwrap();
        assert_eq!(
            read[0].arn.as_deref(),
            Some("arn:aws:iam::123456789012:user/XY")
        );
    }

    #[test]
    fn inline_uuid_text_is_the_hyphenated_form() {
        for seed in 0..200u8 {
            let b: [u8; 16] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 17));
            let t = UuidText::new(&b);
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            let want = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(t.as_str(), want);
            assert_eq!(uuid_bytes(t.as_str()), Some(b));
        }
    }

    #[test]
    fn events_round_trip_and_repeats_are_written_once() {
        let events: Vec<_> = (0..200).map(record).collect();
        let mut p = Packer::new();
        for e in &events {
            p.push(&e.as_event());
        }
        let (blob, min, max, n) = p.finish();
        assert_eq!((min, max, n), (1_800_000_000_000, 1_800_000_000_199, 200));
        assert_eq!(unpack(&blob, "123456789012").unwrap(), events);
        // Ids, time, flags and references: well under 100 bytes an event.
        assert!(blob.len() < 200 * 60, "{}", blob.len());
    }

    #[test]
    fn alternating_clients_are_referred_to() {
        // Three clients taking turns: after the first round every repeated field is one byte.
        let events: Vec<_> = (0..300)
            .map(|i| {
                let mut e = record(i);
                e.user_agent = Some(format!(
                    "client-{}/1.0 with a long user agent string",
                    i % 3
                ));
                e
            })
            .collect();
        let mut p = Packer::new();
        for e in &events {
            p.push(&e.as_event());
        }
        let (blob, ..) = p.finish();
        assert_eq!(unpack(&blob, "123456789012").unwrap(), events);
        assert!(blob.len() < 300 * 50, "{}", blob.len());
    }

    #[test]
    fn canonical_uuids_take_sixteen_bytes() {
        let size = |id: &str| {
            let mut e = record(1);
            e.event_id = id.to_owned();
            e.request_id = id.to_owned();
            let mut p = Packer::new();
            p.push(&e.as_event());
            let (blob, ..) = p.finish();
            assert_eq!(unpack(&blob, "123456789012").unwrap(), vec![e]);
            blob.len()
        };
        let lower = size("0192f0a1-7c3e-7abc-9def-0123456789ab");
        let upper = size("0192F0A1-7C3E-7ABC-9DEF-0123456789AB");
        // Tag + 16 bytes instead of length + 36 characters, twice.
        assert_eq!(upper - lower, 2 * (37 - 17));
        assert_eq!(size("not-a-uuid") + 2 * (37 - 11), upper);
    }

    #[test]
    fn event_ids_of_their_own_millisecond_take_ten_bytes_and_times_are_relative() {
        // Events as keyward makes them: a UUID v7 event id of the event's millisecond, a v4
        // request id; times a few milliseconds apart, some out of order.
        let events: Vec<_> = (0..300u64)
            .map(|i| {
                let mut e = user_event(i, "/", &format!("user{i:05}"));
                e.time = UNIX_EPOCH
                    + Duration::from_millis(1_800_000_000_000 + i * 3 - (i % 7) * 5 + 40);
                e.event_id = crate::events::new_event_id(e.time).to_string();
                e.request_id = format!("3f2a9c1e-5b7d-4e8f-9a0b-{i:012x}");
                e
            })
            .collect();
        let compact = pack(&events);
        let legacy = pack_3(&events);
        // Ids held as bytes (as a server makes them) pack exactly as their text does.
        let mut p = Packer::new();
        for e in &events {
            let bytes = |s: &str| EventId::Uuid(uuid_bytes(s).unwrap());
            p.push(&EventRef {
                event_id: bytes(&e.event_id),
                request_id: bytes(&e.request_id),
                ..e.as_event()
            });
        }
        assert_eq!(p.finish().0, compact);
        assert_eq!(unpack(&compact, "123456789012").unwrap(), events);
        assert_eq!(unpack(&legacy, "123456789012").unwrap(), events);
        // 6 bytes of each event id and at least 6 of each time are saved.
        assert!(
            compact.len() + 300 * 12 <= legacy.len(),
            "{} vs {}",
            compact.len(),
            legacy.len()
        );
        // A UUID v7 of another millisecond, and extreme or negative times, still round trip.
        let mut odd = vec![record(1), record(2), record(3)];
        odd[0].event_id = crate::events::new_event_id(UNIX_EPOCH).to_string();
        odd[1].time = UNIX_EPOCH - Duration::from_millis(1);
        odd[1].event_id = crate::events::new_event_id(odd[1].time).to_string();
        odd[2].time = UNIX_EPOCH + Duration::from_millis(i64::MAX as u64);
        assert_eq!(unpack(&pack(&odd), "123456789012").unwrap(), odd);
        // The short form, by hand: an event of no identity and no optional field, whose event id
        // is tag 3 and 10 bytes, its request id a full UUID, its three strings empty. Read in
        // format 4, the event id's first 6 bytes are the event's millisecond; the same event in
        // format 3 (its time in 8 bytes) is a damaged blob: tag 3 is a reference there.
        let ms: i64 = 0x0192_f0a1_7c3e;
        let tail = |b: &mut Vec<u8>| {
            b.extend_from_slice(&[0, 0, UUID7_TAG as u8]);
            b.extend_from_slice(&[0x7a, 0xbc, 0x9d, 0xef, 1, 2, 3, 4, 5, 6]);
            b.push(UUID_TAG as u8);
            b.extend_from_slice(&[0x11; 16]);
            b.extend_from_slice(&[0, 0, 0]);
        };
        let mut v4 = vec![VERSION];
        varint(&mut v4, zigzag(ms));
        tail(&mut v4);
        let read = unpack(&v4, "123456789012").unwrap();
        assert_eq!(read[0].event_id, "0192f0a1-7c3e-7abc-9def-010203040506");
        assert_eq!(read[0].time, UNIX_EPOCH + Duration::from_millis(ms as u64));
        let mut v3 = vec![VERSION_3];
        v3.extend_from_slice(&ms.to_le_bytes());
        tail(&mut v3);
        assert!(unpack(&v3, "123456789012").is_err());
    }

    #[test]
    fn uuids_are_read_only_in_their_canonical_form() {
        for i in 0..200u32 {
            let b: [u8; 16] =
                std::array::from_fn(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8 * 17));
            let s = UuidText::new(&b);
            assert_eq!(uuid_bytes(s.as_str()), Some(b), "{s}");
        }
        let good = "0192f0a1-7c3e-7abc-9def-0123456789ab";
        assert!(uuid_bytes(good).is_some());
        for bad in [
            "0192F0A1-7C3E-7ABC-9DEF-0123456789AB",
            "0192f0a1-7c3e-7abc-9def-0123456789a",
            "0192f0a1-7c3e-7abc-9def-0123456789abc",
            "0192f0a1x7c3e-7abc-9def-0123456789ab",
            "0192f0a1-7c3e-7abc-9deg-0123456789ab",
            "0192f0a17c3e-7abc-9def-0123456789ab-",
            "",
        ] {
            assert_eq!(uuid_bytes(bad), None, "{bad}");
        }
        // Every non-digit in every digit position.
        for at in UUID_DIGITS.iter().flat_map(|&a| [a, a + 1]) {
            for c in 0..=255u8 {
                let mut s = good.as_bytes().to_vec();
                s[at] = c;
                let Ok(s) = String::from_utf8(s) else {
                    continue;
                };
                assert_eq!(
                    uuid_bytes(&s).is_some(),
                    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
                );
            }
        }
    }

    #[test]
    fn the_packer_keeps_no_borrow_of_what_it_packed() {
        // Requests pack their event from short-lived strings: every value must be copied.
        let mut p = Packer::new();
        let events: Vec<_> = (0..50).map(|i| record(i % 5)).collect();
        for e in &events {
            let copy = e.clone();
            p.push(&copy.as_event());
            drop(copy);
        }
        let (blob, ..) = p.finish();
        assert_eq!(unpack(&blob, "123456789012").unwrap(), events);
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let events: Vec<_> = (0..20).map(record).collect();
        let mut p = Packer::new();
        for e in &events {
            p.push(&e.as_event());
        }
        let (blob, ..) = p.finish();
        for cut in 1..blob.len() {
            let _ = unpack(&blob[..cut], "1");
        }
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0xa5;
            let _ = unpack(&b, "1");
        }
        assert!(unpack(&[], "1").is_err());
        assert!(unpack(&[1], "1").is_err());
        assert!(unpack(&[VERSION + 1], "1").is_err());
        assert_eq!(unpack(&[VERSION_2], "1").unwrap(), vec![]);
        assert_eq!(unpack(&[VERSION], "1").unwrap(), vec![]);
    }
}
