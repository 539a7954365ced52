//! Incremental decoding and verification of `aws-chunked` bodies (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`,
//! its `-TRAILER` form, and `STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
//!
//! Signed chunk: `hex-size;chunk-signature=<64 hex>\r\n<data>\r\n`, signature chained from the seed
//! (the request's signature): string to sign `AWS4-HMAC-SHA256-PAYLOAD\n<date>\n<scope>\n<previous
//! signature>\n<sha256("")>\n<sha256(data)>`. The body ends with a zero-size chunk, then either `\r\n` or
//! (trailer modes) trailing header lines and an empty line; in the signed trailer mode the
//! `x-amz-trailer-signature` line signs the other trailers (`AWS4-HMAC-SHA256-TRAILER\n<date>\n<scope>\n
//! <previous signature>\n<sha256(trailers)>`). A chunk's data is released only once its signature checks.

use std::fmt;

use base64::Engine as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::canonical::EMPTY_SHA256;
use crate::key::{Signature, SigningKey};
use crate::parse::PayloadMode;

/// Longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Default largest chunk accepted (a chunk is buffered until its signature is checked).
pub const DEFAULT_MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;
/// Most trailer lines accepted.
const MAX_TRAILERS: usize = 64;

/// Why an aws-chunked body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The framing is wrong; says which part.
    Malformed(&'static str),
    /// A chunk is larger than the decoder's limit.
    ChunkTooLarge {
        /// The declared size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A chunk signature does not match (chunks are counted from 0).
    ChunkSignatureMismatch {
        /// Index of the failing chunk.
        chunk: u64,
    },
    /// The signed-trailer mode ended without an `x-amz-trailer-signature` line.
    MissingTrailerSignature,
    /// The trailer signature does not match.
    TrailerSignatureMismatch,
    /// A checksum trailer (`x-amz-checksum-*`) does not match the decoded data.
    ChecksumMismatch {
        /// The trailer name.
        name: String,
    },
    /// The decoded length differs from `x-amz-decoded-content-length`.
    DecodedLengthMismatch {
        /// The header value.
        expected: u64,
        /// The bytes decoded.
        actual: u64,
    },
    /// The body ended before the final chunk (from [`ChunkDecoder::finish`]).
    Truncated,
    /// Bytes after the end of the body.
    TrailingData,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Malformed(what) => write!(f, "malformed aws-chunked body: {what}"),
            ChunkError::ChunkTooLarge { size, max } => {
                write!(f, "chunk of {size} bytes exceeds the limit of {max}")
            }
            ChunkError::ChunkSignatureMismatch { chunk } => {
                write!(f, "the signature of chunk {chunk} does not match")
            }
            ChunkError::MissingTrailerSignature => f.write_str("the trailer signature is missing"),
            ChunkError::TrailerSignatureMismatch => {
                f.write_str("the trailer signature does not match")
            }
            ChunkError::ChecksumMismatch { name } => {
                write!(f, "the {name} trailer does not match the data")
            }
            ChunkError::DecodedLengthMismatch { expected, actual } => {
                write!(
                    f,
                    "x-amz-decoded-content-length is {expected} but {actual} bytes were decoded"
                )
            }
            ChunkError::Truncated => f.write_str("the body ended before its final chunk"),
            ChunkError::TrailingData => f.write_str("bytes follow the end of the aws-chunked body"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// What the verifier hands the decoder: the derived key and the chain's seed.
#[derive(Clone)]
pub(crate) struct StreamingState {
    pub(crate) key: SigningKey,
    pub(crate) seed: String,
    pub(crate) amz_date: String,
    pub(crate) scope: String,
    pub(crate) mode: PayloadMode,
    pub(crate) decoded_length: Option<u64>,
    /// The request's `x-amz-trailer` (the checksum trailer it announces), checked at `finish`.
    pub(crate) trailer_name: Option<String>,
}

/// The checksum algorithms a trailer can carry.
#[derive(Clone)]
enum Checksum {
    Crc32(u32),
    Crc32c(u32),
    Sha1(Sha1),
    Sha256(Sha256),
}

const fn crc_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
static CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

fn crc_update(table: &[u32; 256], crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

impl Checksum {
    fn for_trailer(name: &str) -> Option<Self> {
        match name {
            "x-amz-checksum-crc32" => Some(Checksum::Crc32(0)),
            "x-amz-checksum-crc32c" => Some(Checksum::Crc32c(0)),
            "x-amz-checksum-sha1" => Some(Checksum::Sha1(Sha1::new())),
            "x-amz-checksum-sha256" => Some(Checksum::Sha256(Sha256::new())),
            _ => None,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Crc32(c) => *c = crc_update(&CRC32_TABLE, *c, data),
            Checksum::Crc32c(c) => *c = crc_update(&CRC32C_TABLE, *c, data),
            Checksum::Sha1(h) => h.update(data),
            Checksum::Sha256(h) => h.update(data),
        }
    }

    fn base64(self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Checksum::Crc32(c) | Checksum::Crc32c(c) => b64.encode(c.to_be_bytes()),
            Checksum::Sha1(h) => b64.encode(h.finalize()),
            Checksum::Sha256(h) => b64.encode(h.finalize()),
        }
    }
}

#[derive(Clone, Debug)]
enum State {
    /// Reading a chunk header line.
    Header,
    /// Reading `remaining` data bytes of the current chunk.
    Data { remaining: u64 },
    /// Expecting the `\r\n` after a chunk's data (`last`: after the zero chunk of a non-trailer body).
    DataEnd { last: bool },
    /// Reading trailer lines.
    Trailers,
    /// Complete.
    Done,
    /// A previous error; every later call repeats it.
    Failed(ChunkError),
}

/// Incremental decoder and verifier of an aws-chunked body. Feed it the raw body in pieces of any
/// size; take the decoded (and, in signed modes, verified) data as it comes; call [`ChunkDecoder::finish`]
/// at the end of the body to get the trailers.
pub struct ChunkDecoder {
    streaming: StreamingState,
    signed: bool,
    trailer: bool,
    state: State,
    line: Vec<u8>,
    previous_signature: String,
    chunk_signature: Option<String>,
    chunk_hasher: Sha256,
    chunk_buf: Vec<u8>,
    chunk_index: u64,
    output: Vec<u8>,
    decoded: u64,
    trailers: Vec<(String, String)>,
    trailer_signature: Option<String>,
    checksum: Option<(String, Checksum)>,
    max_chunk_size: usize,
}

impl fmt::Debug for ChunkDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkDecoder")
            .field("state", &self.state)
            .field("chunk_index", &self.chunk_index)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

impl ChunkDecoder {
    pub(crate) fn new(streaming: StreamingState) -> Self {
        let (signed, trailer) = match streaming.mode {
            PayloadMode::StreamingSigned { trailer } => (true, trailer),
            _ => (false, true),
        };
        let mut d = ChunkDecoder {
            previous_signature: streaming.seed.clone(),
            streaming,
            signed,
            trailer,
            state: State::Header,
            line: Vec::new(),
            chunk_signature: None,
            chunk_hasher: Sha256::new(),
            chunk_buf: Vec::new(),
            chunk_index: 0,
            output: Vec::new(),
            decoded: 0,
            trailers: Vec::new(),
            trailer_signature: None,
            checksum: None,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
        };
        if let Some(name) = d.streaming.trailer_name.clone() {
            d = d.expect_checksum_trailer(&name);
        }
        d
    }

    /// Verifies the named checksum trailer (`x-amz-checksum-crc32`, `-crc32c`, `-sha1` or `-sha256`)
    /// against the decoded data. Set from the request's `x-amz-trailer` header by
    /// [`crate::Verified::chunk_decoder`]; unknown names (e.g. `x-amz-checksum-crc64nvme`) are not checked.
    pub fn expect_checksum_trailer(mut self, name: &str) -> Self {
        let name = name.trim().to_ascii_lowercase();
        self.checksum = Checksum::for_trailer(&name).map(|c| (name, c));
        self
    }

    /// Sets the largest chunk accepted (a signed chunk is held until its signature is checked).
    pub fn with_max_chunk_size(mut self, max: usize) -> Self {
        self.max_chunk_size = max;
        self
    }

    /// Decoded data released so far and not yet taken; in signed modes only data of verified chunks.
    pub fn take_data(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds the next bytes of the raw body.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), ChunkError> {
        while !input.is_empty() {
            if let Err(e) = self.step(&mut input) {
                self.state = State::Failed(e.clone());
                return Err(e);
            }
        }
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        Ok(())
    }

    /// Ends the body: checks it was complete, the decoded length, the trailer signature and checksum, and
    /// returns the trailers (name lowercased, value trimmed, in order; without `x-amz-trailer-signature`).
    pub fn finish(mut self) -> Result<Vec<(String, String)>, ChunkError> {
        match &self.state {
            State::Done => {}
            State::Failed(e) => return Err(e.clone()),
            _ => return Err(ChunkError::Truncated),
        }
        if let Some(expected) = self.streaming.decoded_length {
            if expected != self.decoded {
                return Err(ChunkError::DecodedLengthMismatch {
                    expected,
                    actual: self.decoded,
                });
            }
        }
        if let Some((name, sum)) = self.checksum.take() {
            if let Some((_, value)) = self.trailers.iter().find(|(n, _)| *n == name) {
                if sum.base64() != *value {
                    return Err(ChunkError::ChecksumMismatch { name });
                }
            } else {
                return Err(ChunkError::ChecksumMismatch { name });
            }
        }
        Ok(self.trailers)
    }

    fn take_line(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let data = *input;
        match data.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                self.line.extend_from_slice(&data[..=pos]);
                *input = &data[pos + 1..];
                if self.line.len() > MAX_LINE {
                    return Err(ChunkError::Malformed("line too long"));
                }
                let mut line = std::mem::take(&mut self.line);
                if line.len() < 2 || line[line.len() - 2] != b'\r' {
                    return Err(ChunkError::Malformed("line not terminated by CRLF"));
                }
                line.truncate(line.len() - 2);
                Ok(Some(line))
            }
            None => {
                self.line.extend_from_slice(data);
                *input = &[];
                if self.line.len() > MAX_LINE {
                    return Err(ChunkError::Malformed("line too long"));
                }
                Ok(None)
            }
        }
    }

    fn step(&mut self, input: &mut &[u8]) -> Result<(), ChunkError> {
        match self.state.clone() {
            State::Header => {
                let Some(line) = self.take_line(input)? else {
                    return Ok(());
                };
                self.start_chunk(&line)
            }
            State::Data { remaining } => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                let (data, rest) = input.split_at(n);
                *input = rest;
                if self.signed {
                    self.chunk_hasher.update(data);
                    self.chunk_buf.extend_from_slice(data);
                } else {
                    self.release(data);
                }
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.end_chunk_data()?;
                    self.state = State::DataEnd { last: false };
                } else {
                    self.state = State::Data { remaining };
                }
                Ok(())
            }
            State::DataEnd { last } => {
                let Some(line) = self.take_line(input)? else {
                    return Ok(());
                };
                if !line.is_empty() {
                    return Err(ChunkError::Malformed("chunk data not followed by CRLF"));
                }
                self.state = if last { State::Done } else { State::Header };
                Ok(())
            }
            State::Trailers => {
                let Some(line) = self.take_line(input)? else {
                    return Ok(());
                };
                if line.is_empty() {
                    self.end_trailers()?;
                    self.state = State::Done;
                    return Ok(());
                }
                let text = std::str::from_utf8(&line)
                    .map_err(|_| ChunkError::Malformed("trailer is not UTF-8"))?;
                let (name, value) = text
                    .split_once(':')
                    .ok_or(ChunkError::Malformed("trailer without ':'"))?;
                let name = name.trim().to_ascii_lowercase();
                let value = value.trim().to_owned();
                if name == "x-amz-trailer-signature" {
                    if self.trailer_signature.is_some() {
                        return Err(ChunkError::Malformed("repeated trailer signature"));
                    }
                    self.trailer_signature = Some(value);
                } else {
                    if self.trailers.len() >= MAX_TRAILERS {
                        return Err(ChunkError::Malformed("too many trailers"));
                    }
                    self.trailers.push((name, value));
                }
                Ok(())
            }
            State::Done => Err(ChunkError::TrailingData),
            State::Failed(e) => Err(e),
        }
    }

    fn start_chunk(&mut self, line: &[u8]) -> Result<(), ChunkError> {
        let line = std::str::from_utf8(line)
            .map_err(|_| ChunkError::Malformed("chunk header is not UTF-8"))?;
        let (size_hex, ext) = match line.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (line, None),
        };
        if size_hex.is_empty()
            || size_hex.len() > 16
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ChunkError::Malformed("chunk size is not hex"));
        }
        let size = u64::from_str_radix(size_hex, 16)
            .map_err(|_| ChunkError::Malformed("chunk size is not hex"))?;
        if size > self.max_chunk_size as u64 {
            return Err(ChunkError::ChunkTooLarge {
                size,
                max: self.max_chunk_size,
            });
        }
        if self.signed {
            let sig = ext
                .and_then(|e| e.strip_prefix("chunk-signature="))
                .ok_or(ChunkError::Malformed("chunk header lacks chunk-signature"))?;
            self.chunk_signature = Some(sig.to_owned());
            self.chunk_hasher = Sha256::new();
            self.chunk_buf.clear();
        }
        if size == 0 {
            self.end_chunk_data()?;
            self.state = if self.trailer {
                State::Trailers
            } else {
                State::DataEnd { last: true }
            };
        } else {
            self.state = State::Data { remaining: size };
        }
        Ok(())
    }

    fn release(&mut self, data: &[u8]) {
        if let Some((_, sum)) = &mut self.checksum {
            sum.update(data);
        }
        self.decoded += data.len() as u64;
        self.output.extend_from_slice(data);
    }

    /// At the end of a chunk's data: checks its signature and releases its data.
    fn end_chunk_data(&mut self) -> Result<(), ChunkError> {
        if !self.signed {
            return Ok(());
        }
        let hash = crate::canonical::to_hex(&std::mem::take(&mut self.chunk_hasher).finalize());
        let expected = chunk_signature(
            &self.streaming.key,
            &self.streaming.amz_date,
            &self.streaming.scope,
            &self.previous_signature,
            &hash,
        );
        let sent = Signature::new(self.chunk_signature.take().unwrap_or_default());
        if !Signature::new(expected.as_str()).ct_eq(&sent) {
            return Err(ChunkError::ChunkSignatureMismatch {
                chunk: self.chunk_index,
            });
        }
        self.previous_signature = expected;
        self.chunk_index += 1;
        let buf = std::mem::take(&mut self.chunk_buf);
        self.release(&buf);
        Ok(())
    }

    fn end_trailers(&mut self) -> Result<(), ChunkError> {
        if !self.signed {
            return Ok(());
        }
        let sent = self
            .trailer_signature
            .take()
            .ok_or(ChunkError::MissingTrailerSignature)?;
        let expected = trailer_signature(
            &self.streaming.key,
            &self.streaming.amz_date,
            &self.streaming.scope,
            &self.previous_signature,
            &self.trailers,
        );
        if !Signature::new(expected).ct_eq(&Signature::new(sent)) {
            return Err(ChunkError::TrailerSignatureMismatch);
        }
        Ok(())
    }
}

/// Base64 of the named checksum (`x-amz-checksum-crc32`, ...) of `data`, as a trailer carries it.
pub(crate) fn checksum_base64(name: &str, data: &[u8]) -> Option<String> {
    let mut c = Checksum::for_trailer(name)?;
    c.update(data);
    Some(c.base64())
}

/// The signature of one chunk, chained from `previous`.
pub(crate) fn chunk_signature(
    key: &SigningKey,
    amz_date: &str,
    scope: &str,
    previous: &str,
    chunk_sha256_hex: &str,
) -> String {
    let sts = format!("AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256_hex}");
    key.sign(sts.as_bytes())
}

/// The signature of the trailers (`name:value\n` each, sorted by name), chained from `previous`.
pub(crate) fn trailer_signature(
    key: &SigningKey,
    amz_date: &str,
    scope: &str,
    previous: &str,
    trailers: &[(String, String)],
) -> String {
    let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::new();
    for (n, v) in sorted {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    let hash = crate::canonical::to_hex(&Sha256::digest(canonical.as_bytes()));
    let sts = format!("AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous}\n{hash}");
    key.sign(sts.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_values() {
        assert_eq!(crc_update(&CRC32_TABLE, 0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc_update(&CRC32C_TABLE, 0, b"123456789"), 0xE306_9283);
        let split = crc_update(&CRC32_TABLE, crc_update(&CRC32_TABLE, 0, b"1234"), b"56789");
        assert_eq!(split, 0xCBF4_3926);
    }
}
