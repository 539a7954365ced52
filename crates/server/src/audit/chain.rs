//! The hash chain of the audit log file, and its verification (`keyward audit verify`).
//!
//! Each line is a CloudTrail event (a JSON object) with one more member appended last,
//! `"keywardChain":{"seq":N,"prev":"<hex>","hash":"<hex>"}`, where `seq` counts lines from 1, `prev`
//! is the previous line's `hash` (64 zeros for the first line) and
//! `hash = hex(SHA-256(prev || "\n" || seq || "\n" || event))`, `event` being the line's JSON without
//! the chain member (the exact bytes before `,"keywardChain":`, plus the closing `}`). Editing an
//! event changes its hash; removing, inserting or reordering lines breaks `seq` or `prev`.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const MARKER: &str = ",\"keywardChain\":";

/// Where a chain stands: the last line's number and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Lines so far (the last line's `seq`).
    pub seq: u64,
    /// The last line's hash (hex), [`GENESIS`] before the first line.
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

fn digest(prev: &str, seq: u64, event: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(event.as_bytes());
    hex::encode(h.finalize())
}

impl ChainHead {
    /// Appends `event` (one JSON object on one line, without the chain member) to the chain and
    /// returns the line to write, newline included.
    pub fn link(&mut self, event: &str) -> String {
        let seq = self.seq + 1;
        let hash = digest(&self.hash, seq, event);
        let body = event.strip_suffix('}').unwrap_or(event);
        let line = format!(
            "{body}{MARKER}{{\"seq\":{seq},\"prev\":\"{}\",\"hash\":\"{hash}\"}}}}\n",
            self.hash
        );
        self.seq = seq;
        self.hash = hash;
        line
    }
}

/// One line split into its event and its chain member.
struct Linked<'a> {
    event: String,
    seq: u64,
    prev: &'a str,
    hash: &'a str,
}

fn split(line: &str) -> Option<Linked<'_>> {
    let at = line.rfind(MARKER)?;
    let rest = line[at + MARKER.len()..].strip_suffix("}}")?;
    let rest = rest.strip_prefix("{\"seq\":")?;
    let (seq, rest) = rest.split_once(",\"prev\":\"")?;
    let (prev, rest) = rest.split_once("\",\"hash\":\"")?;
    let hash = rest.strip_suffix('"')?;
    let seq = seq.parse().ok()?;
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64(prev) || !hex64(hash) {
        return None;
    }
    Some(Linked {
        event: format!("{}}}", &line[..at]),
        seq,
        prev,
        hash,
    })
}

/// Why a log does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The line's content does not match its hash.
    Altered,
    /// Lines are missing before this one (`seq` jumps ahead).
    Removed {
        /// The `seq` expected here.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// This line does not belong here (a copy, an insertion, or lines swapped).
    Inserted {
        /// The `seq` expected here.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// The line carries a valid hash but does not chain to the previous line.
    Unchained,
    /// Not a chained event line (not JSON, or no chain member).
    Malformed,
    /// The last line is incomplete (no newline): a write cut short.
    Truncated,
}

/// The first line that breaks the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong.
    pub kind: Broken,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.line;
        match &self.kind {
            Broken::Altered => write!(f, "line {n}: altered (its content does not match its hash)"),
            Broken::Removed { expected, found } => write!(
                f,
                "line {n}: {} line(s) removed before it (expected seq {expected}, found {found})",
                found - expected
            ),
            Broken::Inserted { expected, found } => write!(
                f,
                "line {n}: inserted or moved (expected seq {expected}, found {found})"
            ),
            Broken::Unchained => write!(
                f,
                "line {n}: altered (it does not chain to the previous line)"
            ),
            Broken::Malformed => write!(f, "line {n}: not a keyward audit line"),
            Broken::Truncated => write!(f, "line {n}: truncated (no end of line)"),
        }
    }
}

/// Checks a log read from `r`; returns the chain's head (line count and last hash).
pub fn verify_reader<R: BufRead>(mut r: R) -> std::io::Result<Result<ChainHead, VerifyError>> {
    let mut head = ChainHead::default();
    let mut line_no = 0u64;
    let mut buf = String::new();
    loop {
        buf.clear();
        if r.read_line(&mut buf)? == 0 {
            return Ok(Ok(head));
        }
        line_no += 1;
        let fail = |kind| {
            Ok(Err(VerifyError {
                line: line_no,
                kind,
            }))
        };
        let Some(line) = buf.strip_suffix('\n') else {
            return fail(Broken::Truncated);
        };
        let Some(l) = split(line) else {
            return fail(Broken::Malformed);
        };
        if serde_json::from_str::<serde_json::Value>(&l.event).is_err() {
            return fail(Broken::Malformed);
        }
        if digest(l.prev, l.seq, &l.event) != l.hash {
            return fail(Broken::Altered);
        }
        let expected = head.seq + 1;
        if l.seq > expected {
            return fail(Broken::Removed {
                expected,
                found: l.seq,
            });
        }
        if l.seq < expected {
            return fail(Broken::Inserted {
                expected,
                found: l.seq,
            });
        }
        if l.prev != head.hash {
            return fail(Broken::Unchained);
        }
        head = ChainHead {
            seq: l.seq,
            hash: l.hash.to_owned(),
        };
    }
}

/// Checks the log at `path`.
pub fn verify_file(path: &Path) -> std::io::Result<Result<ChainHead, VerifyError>> {
    let f = std::fs::File::open(path)?;
    verify_reader(std::io::BufReader::new(f))
}

/// The head of an existing log, from its last complete line, to continue the chain after a
/// restart; `Ok(None)` for an empty file. Also returns the length of the complete lines: a last
/// line without newline (a write cut short by a crash, never acknowledged) is to be cut off.
pub fn read_head(f: &mut std::fs::File) -> std::io::Result<(ChainHead, u64)> {
    let len = f.seek(SeekFrom::End(0))?;
    // Find the end of the last complete line, then its start, reading backwards in chunks.
    let mut end = None;
    let mut start = 0u64;
    let mut pos = len;
    let mut tail: Vec<u8> = Vec::new();
    while pos > 0 {
        let chunk = (64 * 1024u64).min(pos);
        pos -= chunk;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = vec![0u8; chunk as usize];
        f.read_exact(&mut buf)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        let newlines: Vec<usize> = tail
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        if end.is_none() {
            if let Some(&last) = newlines.last() {
                end = Some(pos + last as u64 + 1);
            }
        }
        if let Some(e) = end {
            let before: Vec<&usize> = newlines
                .iter()
                .filter(|&&i| pos + (i as u64) + 1 < e)
                .collect();
            if let Some(&&i) = before.last() {
                start = pos + i as u64 + 1;
                break;
            }
        }
    }
    let Some(end) = end else {
        return Ok((ChainHead::default(), 0));
    };
    let from = (start - pos) as usize;
    let to = (end - pos) as usize - 1;
    let line = std::str::from_utf8(&tail[from..to])
        .map_err(|_| std::io::Error::other("the audit log's last line is not UTF-8"))?;
    let l = split(line).ok_or_else(|| {
        std::io::Error::other("the audit log's last line is not a keyward audit line")
    })?;
    Ok((
        ChainHead {
            seq: l.seq,
            hash: l.hash.to_owned(),
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> Vec<String> {
        let mut head = ChainHead::default();
        (0..n)
            .map(|i| head.link(&format!("{{\"eventName\":\"Op{i}\",\"n\":{i}}}")))
            .collect()
    }

    fn check(lines: &[String]) -> Result<ChainHead, VerifyError> {
        verify_reader(lines.concat().as_bytes()).unwrap()
    }

    fn err(lines: &[String]) -> (u64, Broken) {
        let e = check(lines).unwrap_err();
        (e.line, e.kind)
    }

    #[test]
    fn intact_log_verifies() {
        let lines = log(5);
        let head = check(&lines).unwrap();
        assert_eq!(head.seq, 5);
        assert_eq!(check(&[]).unwrap(), ChainHead::default());
        let v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(v["eventName"], "Op2");
        assert_eq!(v["keywardChain"]["seq"], 3);
        assert_eq!(v["keywardChain"]["hash"], head_of(&lines[..3]).hash);
    }

    fn head_of(lines: &[String]) -> ChainHead {
        check(lines).unwrap()
    }

    #[test]
    fn an_edit_is_found() {
        let mut lines = log(5);
        lines[2] = lines[2].replace("Op2", "Op9");
        assert_eq!(err(&lines), (3, Broken::Altered));
        let mut lines = log(5);
        lines[4] = lines[4].replace("\"n\":4", "\"n\":5");
        assert_eq!(err(&lines), (5, Broken::Altered));
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let mut lines = log(4);
        // Rewrite line 2 consistently with itself: line 3 no longer chains to it.
        let mut head = ChainHead::default();
        head.link("{\"eventName\":\"Op0\",\"n\":0}");
        lines[1] = head.link("{\"eventName\":\"Forged\",\"n\":1}");
        assert_eq!(err(&lines), (3, Broken::Unchained));
    }

    #[test]
    fn removals_insertions_and_swaps_are_found() {
        let lines = log(5);
        let mut removed = lines.clone();
        removed.remove(1);
        assert_eq!(
            err(&removed),
            (
                2,
                Broken::Removed {
                    expected: 2,
                    found: 3
                }
            )
        );
        let mut first_removed = lines.clone();
        first_removed.remove(0);
        assert_eq!(
            err(&first_removed).1,
            Broken::Removed {
                expected: 1,
                found: 2
            }
        );
        let mut inserted = lines.clone();
        inserted.insert(3, lines[1].clone());
        assert_eq!(
            err(&inserted),
            (
                4,
                Broken::Inserted {
                    expected: 4,
                    found: 2
                }
            )
        );
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(
            err(&swapped),
            (
                2,
                Broken::Removed {
                    expected: 2,
                    found: 3
                }
            )
        );
        let mut foreign = lines.clone();
        foreign.insert(2, "{\"eventName\":\"x\"}\n".to_owned());
        assert_eq!(err(&foreign), (3, Broken::Malformed));
        // A removed tail is invisible to the file alone: compare the count with `audit verify`'s
        // last report (see docs/audit.md).
        assert_eq!(check(&lines[..3]).unwrap().seq, 3);
    }

    #[test]
    fn a_cut_last_line_is_truncated() {
        let mut lines = log(3);
        let last = lines.pop().unwrap();
        lines.push(last[..last.len() / 2].to_owned());
        assert_eq!(err(&lines), (3, Broken::Truncated));
    }

    #[test]
    fn the_head_is_read_back_from_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "").unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        assert_eq!(read_head(&mut f).unwrap(), (ChainHead::default(), 0));
        // Long lines span several read chunks.
        let mut head = ChainHead::default();
        let big = "x".repeat(100_000);
        let mut text = String::new();
        for i in 0..3 {
            text.push_str(&head.link(&format!("{{\"i\":{i},\"pad\":\"{big}\"}}")));
        }
        let complete = text.len() as u64;
        text.push_str("{\"partial");
        std::fs::write(&path, &text).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        assert_eq!(read_head(&mut f).unwrap(), (head.clone(), complete));
        std::fs::write(&path, &text[..complete as usize]).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        assert_eq!(read_head(&mut f).unwrap(), (head, complete));
    }
}
