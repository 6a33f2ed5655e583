//! Stored entries and their versioned binary format.
//!
//! One entry holds one whole response (status, headers, body) together with what freshness
//! needs, so that headers and body can never come from two different responses: they are
//! written and read as one value. The encoding starts with a magic and a format version;
//! a value with another magic, another version, or any inconsistency in its lengths decodes
//! to an error, which the caller treats as a miss and overwrites. A future format change
//! therefore never misreads old entries: it simply refills them.
//!
//! Layout, all integers little-endian:
//! ```text
//! "SLT" version:u8 status:u16 flags:u8
//! stored_at_ms:u64 initial_age_ms:u64 fresh_ms:u64 swr_ms:u64 sie_ms:u64 purge_seq:u64
//! fetch_ms:u64
//! url:str32 ntags:u16 (tag:str16)* nvary:u16 (name:str16 value:str32)*
//! nheaders:u16 (name:str16 value:str32)*
//! coding:u8 origin_coding:u8 identity_len:u64 body_crc32:u32 body:str32
//! ```
//!
//! The body's CRC-32 is checked on every decode: a torn write or a foreign writer's bytes
//! are a miss that the next fill overwrites, never a broken body (or a gzip stream that
//! stops halfway) sent to a client, which gets the stored bytes untouched.

use crate::coding::Coding;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const MAGIC: &[u8; 3] = b"SLT";
/// The entry format written by this build (2: codings and the body checksum).
pub const FORMAT_VERSION: u8 = 2;

/// `flags` bits.
pub const MUST_REVALIDATE: u8 = 1;
pub const NO_CACHE: u8 = 2;
pub const PROXY_REVALIDATE: u8 = 4;

/// One stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub status: StatusCode,
    pub flags: u8,
    /// When the response was received (wall clock, ms): RFC 9111 `response_time`.
    pub stored_at_ms: u64,
    /// RFC 9111 §4.2.3 `corrected_initial_age`, in ms.
    pub initial_age_ms: u64,
    /// Freshness lifetime, in ms.
    pub fresh_ms: u64,
    /// How long past freshness it may be served while one refresh runs.
    pub swr_ms: u64,
    /// How long past freshness it may be served when the origin fails.
    pub sie_ms: u64,
    /// The purge sequence number known when the fill *started*: any purge record with a
    /// higher number that matches this entry was issued after, and applies to it.
    pub purge_seq: u64,
    /// How long the fill took upstream: what every hit on this entry spares the back end.
    pub fetch_ms: u64,
    /// The normalized URL (path and query) it answers.
    pub url: String,
    pub tags: Vec<String>,
    /// For a response with `Vary`: each listed request header and the normalized value
    /// the request that fetched it had ([`crate::key::vary_value`]). Empty otherwise.
    pub vary: Vec<(String, String)>,
    /// End-to-end response headers, as received (hop-by-hop headers and `Age` removed;
    /// for a body slate decodes, `Content-Encoding` and `Content-Length` too).
    pub headers: HeaderMap,
    /// The body, in `coding`.
    pub body: Bytes,
    /// How `body` is stored ([`crate::coding`]).
    pub coding: Coding,
    /// How the origin sent it: answers in another coding were re-encoded by slate.
    pub origin_coding: Coding,
    /// Length of the body decoded to identity.
    pub identity_len: u64,
}

/// Why bytes from the store are not a usable entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a slate entry")]
    Foreign,
    #[error("entry format version {0} is not {FORMAT_VERSION}")]
    Version(u8),
    #[error("entry is truncated or corrupt")]
    Corrupt,
}

impl Entry {
    /// Age in ms at `now_ms` (RFC 9111 §4.2.3 `current_age`).
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        self.initial_age_ms + now_ms.saturating_sub(self.stored_at_ms)
    }

    /// Remaining freshness in ms; negative once stale.
    pub fn ttl_ms(&self, now_ms: u64) -> i64 {
        self.fresh_ms as i64 - self.age_ms(now_ms) as i64
    }

    /// Whether it has a validator to revalidate with (RFC 9111 §4.3.1).
    pub fn has_validator(&self) -> bool {
        self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED)
    }

    /// Whether this variant was selected by the same request header values as `headers`
    /// carries (RFC 9111 §4.1).
    pub fn vary_matches(&self, headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| crate::key::vary_value(headers, name) == *value)
    }

    /// Bytes this entry takes in memory, for weighing caches: everything it owns, the
    /// header map's table (sized by its capacity, not by the headers in it) included.
    ///
    /// Why count the table: the memory store keeps many small expensive reports, and a
    /// gzipped 2 KB report's header map is a third of it; counting only header bytes let
    /// 1 GiB of entries take 1.1 GiB and more.
    pub fn weight(&self) -> u64 {
        // One slot of a HeaderMap: name, value, hash and links, and its index entries.
        const HEADER_SLOT: usize =
            std::mem::size_of::<(HeaderName, HeaderValue)>() + 2 * std::mem::size_of::<usize>() + 8;
        // A String's or Vec's own allocation, rounded up the way allocators do.
        fn owned(len: usize) -> usize {
            len.next_multiple_of(16)
        }
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(n, v)| owned(n.as_str().len()) + owned(v.len()))
            .sum();
        let headers = self.headers.capacity() * HEADER_SLOT + header_bytes;
        let tags: usize = self
            .tags
            .iter()
            .map(|t| std::mem::size_of::<String>() + owned(t.len()))
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(n, v)| 2 * std::mem::size_of::<String>() + owned(n.len()) + owned(v.len()))
            .sum();
        (std::mem::size_of::<Self>()
            + owned(self.body.len())
            + owned(self.url.len())
            + headers
            + tags
            + vary) as u64
    }

    /// At least the length of [`Self::encode`]'s output, and less than 128 bytes over.
    fn encoded_len_hint(&self) -> usize {
        let strings = |v: &[String]| v.iter().map(|t| t.len() + 2).sum::<usize>();
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 6)
            .sum();
        let vary: usize = self.vary.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
        128 + self.url.len() + strings(&self.tags) + headers + vary + self.body.len()
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len_hint());
        b.put_slice(MAGIC);
        b.put_u8(FORMAT_VERSION);
        b.put_u16_le(self.status.as_u16());
        b.put_u8(self.flags);
        for v in [
            self.stored_at_ms,
            self.initial_age_ms,
            self.fresh_ms,
            self.swr_ms,
            self.sie_ms,
            self.purge_seq,
            self.fetch_ms,
        ] {
            b.put_u64_le(v);
        }
        put32(&mut b, self.url.as_bytes());
        b.put_u16_le(self.tags.len().min(u16::MAX as usize) as u16);
        for t in self.tags.iter().take(u16::MAX as usize) {
            put16(&mut b, t.as_bytes());
        }
        b.put_u16_le(self.vary.len().min(u16::MAX as usize) as u16);
        for (name, value) in self.vary.iter().take(u16::MAX as usize) {
            put16(&mut b, name.as_bytes());
            put32(&mut b, value.as_bytes());
        }
        let n = self.headers.len().min(u16::MAX as usize);
        b.put_u16_le(n as u16);
        for (name, value) in self.headers.iter().take(n) {
            put16(&mut b, name.as_str().as_bytes());
            put32(&mut b, value.as_bytes());
        }
        b.put_u8(self.coding.code());
        b.put_u8(self.origin_coding.code());
        b.put_u64_le(self.identity_len);
        b.put_u32_le(crc32fast::hash(&self.body));
        put32(&mut b, &self.body);
        b.freeze()
    }

    /// Decodes an entry; the body is a zero-copy slice of `data`.
    pub fn decode(data: Bytes) -> Result<Entry, DecodeError> {
        if data.len() < 4 || &data[..3] != MAGIC {
            return Err(DecodeError::Foreign);
        }
        if data[3] != FORMAT_VERSION {
            return Err(DecodeError::Version(data[3]));
        }
        let mut r = Reader { data, pos: 4 };
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Corrupt)?;
        let flags = r.u8()?;
        let stored_at_ms = r.u64()?;
        let initial_age_ms = r.u64()?;
        let fresh_ms = r.u64()?;
        let swr_ms = r.u64()?;
        let sie_ms = r.u64()?;
        let purge_seq = r.u64()?;
        let fetch_ms = r.u64()?;
        let url = r.string32()?;
        let ntags = r.u16()?;
        let mut tags = Vec::with_capacity(ntags as usize);
        for _ in 0..ntags {
            let len = r.u16()? as usize;
            tags.push(String::from_utf8(r.take(len)?.to_vec()).map_err(|_| DecodeError::Corrupt)?);
        }
        let nvary = r.u16()?;
        let mut vary = Vec::with_capacity(nvary as usize);
        for _ in 0..nvary {
            let len = r.u16()? as usize;
            let name =
                String::from_utf8(r.take(len)?.to_vec()).map_err(|_| DecodeError::Corrupt)?;
            let value = r.string32()?;
            vary.push((name, value));
        }
        let nheaders = r.u16()?;
        let mut headers = HeaderMap::with_capacity(nheaders as usize);
        for _ in 0..nheaders {
            let len = r.u16()? as usize;
            let name = HeaderName::from_bytes(&r.take(len)?).map_err(|_| DecodeError::Corrupt)?;
            let len = r.u32()? as usize;
            let value =
                HeaderValue::from_maybe_shared(r.take(len)?).map_err(|_| DecodeError::Corrupt)?;
            headers.append(name, value);
        }
        let coding = Coding::from_code(r.u8()?).ok_or(DecodeError::Corrupt)?;
        let origin_coding = Coding::from_code(r.u8()?).ok_or(DecodeError::Corrupt)?;
        let identity_len = r.u64()?;
        let crc = r.u32()?;
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        if r.pos != r.data.len() || crc32fast::hash(&body) != crc {
            return Err(DecodeError::Corrupt);
        }
        Ok(Entry {
            status,
            flags,
            stored_at_ms,
            initial_age_ms,
            fresh_ms,
            swr_ms,
            sie_ms,
            purge_seq,
            fetch_ms,
            url,
            tags,
            vary,
            headers,
            body,
            coding,
            origin_coding,
            identity_len,
        })
    }
}

fn put16(b: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(u16::MAX as usize)];
    b.put_u16_le(s.len() as u16);
    b.put_slice(s);
}

fn put32(b: &mut BytesMut, s: &[u8]) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s);
}

struct Reader {
    data: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Corrupt)?;
        if end > self.data.len() {
            return Err(DecodeError::Corrupt);
        }
        let s = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(self.take(2)?.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(self.take(4)?.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(self.take(8)?.get_u64_le())
    }
    fn string32(&mut self) -> Result<String, DecodeError> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError::Corrupt)
    }
}

#[cfg(test)]
impl Entry {
    /// A plain fresh 200 with `body` (also in header `x-report`), for unit tests.
    pub(crate) fn with_body(body: &str) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-report",
            HeaderValue::from_str(body).unwrap_or(HeaderValue::from_static("-")),
        );
        Entry {
            status: StatusCode::OK,
            flags: 0,
            stored_at_ms: 1,
            initial_age_ms: 0,
            fresh_ms: 60_000,
            swr_ms: 0,
            sie_ms: 0,
            purge_seq: 0,
            fetch_ms: 5,
            url: "/r".into(),
            tags: vec!["t".into()],
            vary: vec![],
            headers,
            body: Bytes::from(body.to_string()),
            coding: Coding::Identity,
            origin_coding: Coding::Identity,
            identity_len: body.len() as u64,
        }
    }

    /// A report of `len` body bytes, stored now, fresh for an hour, that took `fetch_ms` to
    /// fill (for tests of what the stores keep).
    pub(crate) fn report(len: usize, fetch_ms: u64) -> Entry {
        let mut e = Entry::with_body("r");
        e.body = Bytes::from(vec![b'x'; len]);
        e.identity_len = len as u64;
        e.stored_at_ms = crate::clock::Clock::system().now_ms();
        e.fresh_ms = 3_600_000;
        e.fetch_ms = fetch_ms;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            status: StatusCode::OK,
            flags: MUST_REVALIDATE,
            stored_at_ms: 1_700_000_000_000,
            initial_age_ms: 1500,
            fresh_ms: 3_600_000,
            swr_ms: 60_000,
            sie_ms: 0,
            purge_seq: 42,
            fetch_ms: 15_000,
            url: "/r?a=1".into(),
            tags: vec!["sales".into(), "finance".into()],
            vary: vec![("accept-encoding".into(), "gzip".into())],
            headers,
            body: Bytes::from_static(b"{\"total\": 1}"),
            coding: Coding::Gzip,
            origin_coding: Coding::Identity,
            identity_len: 99,
        }
    }

    #[test]
    fn the_encoding_fits_its_hint_and_the_weight_counts_the_header_table() {
        let mut e = sample();
        let (before, bytes_before) = (e.weight(), e.encode().len());
        assert!(bytes_before <= e.encoded_len_hint() && e.encoded_len_hint() < bytes_before + 128);
        for i in 0..20 {
            let name = HeaderName::from_bytes(format!("x-h{i:02}").as_bytes()).unwrap();
            e.headers.append(name, HeaderValue::from_static("v"));
        }
        let encoded = e.encode().len();
        assert!(encoded <= e.encoded_len_hint() && e.encoded_len_hint() < encoded + 128);
        // Each header takes a slot of the map's table, whatever its bytes: more than the
        // name and value the table points to.
        let slot = std::mem::size_of::<(HeaderName, HeaderValue)>();
        assert!(
            e.weight() - before >= 20 * (slot + 2 * 16) as u64,
            "20 headers weighed {} bytes",
            e.weight() - before
        );
        assert!(e.weight() >= (e.headers.capacity() * slot + e.body.len()) as u64);
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(Entry::decode(e.encode()).unwrap(), e);
    }

    #[test]
    fn rejects_foreign_old_and_corrupt() {
        let bytes = sample().encode();
        assert_eq!(
            Entry::decode(Bytes::from_static(b"hello")),
            Err(DecodeError::Foreign)
        );
        let mut v = bytes.to_vec();
        v[3] = 0;
        assert_eq!(Entry::decode(Bytes::from(v)), Err(DecodeError::Version(0)));
        for cut in [5, 20, 60, bytes.len() - 1] {
            assert_eq!(
                Entry::decode(bytes.slice(..cut)),
                Err(DecodeError::Corrupt),
                "{cut}"
            );
        }
        let mut v = bytes.to_vec();
        v.push(0);
        assert_eq!(Entry::decode(Bytes::from(v)), Err(DecodeError::Corrupt));
        // One flipped bit in the body, lengths intact: the checksum catches it.
        let mut v = bytes.to_vec();
        let last = v.len() - 1;
        v[last] ^= 1;
        assert_eq!(Entry::decode(Bytes::from(v)), Err(DecodeError::Corrupt));
    }
}
