//! Content codings: how bodies are stored, and what each client is sent.
//!
//! One report, one entry, whatever `Accept-Encoding` a client spells (Varnish does the
//! same for gzip): a compressible body is stored once, compressed with `cache.compress`,
//! whatever coding the origin sent it in; on a hit a client that accepts the stored coding
//! gets the stored bytes untouched, and any other client gets them decoded as it reads,
//! byte for byte the origin's identity body.
//!
//! - At fill time ([`prepare`]): a body in a coding slate reads (gzip, deflate, br, zstd)
//!   is decoded (bounded by `store.max_object_size`, so a compression bomb is refused); the
//!   identity body is compressed with the configured coding when its `Content-Type` is
//!   compressible and it is not tiny, and kept only if that saves something. A body the
//!   origin sent in the configured coding is kept as it came (no second compression).
//! - On a hit ([`Accepts`]): RFC 9110 §12.5.3 `Accept-Encoding`, with q-values.
//! - A strong `ETag` is the origin's word for the bytes it sent: when slate sends other
//!   bytes (it re-encoded them), the tag goes out weak (`W/`), as RFC 9110 §8.8.1 asks.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue};
use std::io::Read;

/// A content coding slate reads (and, for gzip and zstd, writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Br,
    Zstd,
}

impl Coding {
    pub const ALL: [Coding; 5] = [
        Coding::Identity,
        Coding::Gzip,
        Coding::Deflate,
        Coding::Br,
        Coding::Zstd,
    ];

    /// As written in `Content-Encoding` (and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// A `Content-Encoding` value slate can decode; `None` for anything else (several
    /// codings, `compress`, unknown tokens).
    pub fn from_content_encoding(v: Option<&HeaderValue>) -> Option<Coding> {
        let Some(v) = v else {
            return Some(Coding::Identity);
        };
        let s = v.to_str().ok()?.trim();
        Some(match s.to_ascii_lowercase().as_str() {
            "" | "identity" => Coding::Identity,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Br,
            "zstd" => Coding::Zstd,
            _ => return None,
        })
    }

    /// Its one-byte code in the entry format.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<Coding> {
        Coding::ALL.get(c as usize).copied()
    }
}

/// `cache.compress`: how compressible bodies are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    Gzip,
    Zstd,
    Off,
}

impl Compress {
    fn coding(self) -> Coding {
        match self {
            Compress::Gzip => Coding::Gzip,
            Compress::Zstd => Coding::Zstd,
            Compress::Off => Coding::Identity,
        }
    }
}

/// Levels chosen by measurement on JSON reports of 22 KB to 2.2 MB (`cargo run --release
/// --example codec_levels`, bench/RESULTS.md "Compression levels"): gzip 6 stores 0.16-0.18
/// of the body, within 1% of level 9 in half its time, and 0.65× what level 1 stores (a
/// fill pays 16 ms on a 2 MB report; every hit then moves the smaller bytes). zstd 6 stores
/// 0.155-0.17 at the same cost; zstd 1 and 3 were larger.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 6;

/// Bodies smaller than this are stored as they are: a few hundred bytes gain little, and
/// every client then gets them without a coding to undo.
pub const MIN_COMPRESS: usize = 512;

/// The media type of a `Content-Type`, lower-cased, without its parameters.
pub(crate) fn mime(content_type: Option<&HeaderValue>) -> Option<String> {
    let ct = content_type?.to_str().ok()?;
    let mime = ct.split(';').next().unwrap_or("").trim();
    Some(mime.to_ascii_lowercase())
}

/// Whether a `Content-Type` is text that compresses well (JSON, CSV, text, XML,
/// JavaScript, form data).
pub fn compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(mime) = mime(content_type) else {
        return false;
    };
    let Some((top, sub)) = mime.split_once('/') else {
        return false;
    };
    top == "text"
        || sub.ends_with("+json")
        || sub.ends_with("+xml")
        || matches!(
            sub,
            "json"
                | "xml"
                | "javascript"
                | "x-javascript"
                | "ecmascript"
                | "csv"
                | "x-ndjson"
                | "ndjson"
                | "jsonl"
                | "x-www-form-urlencoded"
                | "graphql-response+json"
                | "yaml"
                | "x-yaml"
        )
}

/// Why a body cannot be stored in a coding slate understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodingError {
    #[error("the {0} body does not decode")]
    Corrupt(&'static str),
    #[error("the decoded body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("compressing failed: {0}")]
    Compress(String),
}

/// A body as it will be stored: its bytes, their coding, the length of the identity body,
/// and the coding the origin sent it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub body: Bytes,
    pub coding: Coding,
    pub identity_len: u64,
    pub origin_coding: Coding,
}

/// A reader of `src` decoded from `coding`; `head` is the first bytes of `src` (to tell
/// zlib from raw deflate). `None`: a zstd stream whose header does not read.
fn decoder<'a, R: Read + Send + 'a>(
    src: R,
    head: &[u8],
    coding: Coding,
) -> Option<Box<dyn Read + Send + 'a>> {
    Some(match coding {
        Coding::Identity => Box::new(src),
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(src)),
        // `deflate` is the zlib format (RFC 9110 §8.4.1.2), though some servers send raw
        // deflate: the zlib header tells them apart.
        Coding::Deflate if is_zlib(head) => Box::new(flate2::read::ZlibDecoder::new(src)),
        Coding::Deflate => Box::new(flate2::read::DeflateDecoder::new(src)),
        Coding::Br => Box::new(brotli_decompressor::Decompressor::new(src, 64 << 10)),
        Coding::Zstd => Box::new(zstd::stream::read::Decoder::new(src).ok()?),
    })
}

/// Whether a deflate body starts with a zlib header (RFC 1950 §2.2: method 8, and the two
/// bytes a multiple of 31).
fn is_zlib(head: &[u8]) -> bool {
    head.len() >= 2
        && head[0] & 0x0f == 8
        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0
}

/// Decodes `body` (in `coding`) to identity, refusing more than `limit` bytes.
pub fn decode(body: &[u8], coding: Coding, limit: u64) -> Result<Bytes, CodingError> {
    if coding == Coding::Identity {
        return Ok(Bytes::copy_from_slice(body));
    }
    let corrupt = CodingError::Corrupt(coding.as_str());
    let reader = decoder(body, body, coding).ok_or(corrupt.clone())?;
    let mut out = Vec::with_capacity((body.len() * 4).min(limit as usize));
    // One byte past the limit tells "exactly the limit" from "more".
    let n = reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| corrupt)?;
    if n as u64 > limit {
        return Err(CodingError::TooLarge(limit));
    }
    Ok(held(out))
}

/// A body as the store will hold it: in an allocation of its own length. Why:
/// `Bytes::from(Vec)` keeps the vector's whole capacity (an encoder's output grows by
/// doubling, a decoder's is sized by a guess, zstd's starts at the compression bound, the
/// size of the input), while the store weighs an entry by its length; the slack would be
/// memory `store.memory_limit` never sees (a 10-minute soak held 2.9x the limit). One
/// memcpy at fill time buys it back; `shrink_to_fit` would not, since mimalloc keeps a
/// block in place when it shrinks by less than half.
pub(crate) fn held(v: Vec<u8>) -> Bytes {
    if has_slack(v.len(), v.capacity()) {
        Bytes::copy_from_slice(&v)
    } else {
        Bytes::from(v)
    }
}

/// More than 1/16 of the allocation unused: worth a copy before it is held for long.
pub(crate) fn has_slack(len: usize, capacity: usize) -> bool {
    capacity - len.min(capacity) > len / 16
}

/// Compresses an identity body with `coding` (gzip or zstd).
pub fn compress(body: &[u8], coding: Coding) -> Result<Bytes, CodingError> {
    use std::io::Write;
    let err = |e: std::io::Error| CodingError::Compress(e.to_string());
    match coding {
        Coding::Gzip => {
            let out = Vec::with_capacity(body.len() / 4 + 64);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            enc.write_all(body).map_err(err)?;
            enc.finish().map(held).map_err(err)
        }
        Coding::Zstd => zstd::bulk::compress(body, ZSTD_LEVEL)
            .map(held)
            .map_err(err),
        other => Err(CodingError::Compress(format!(
            "slate does not write {}",
            other.as_str()
        ))),
    }
}

/// Readies a body for the store: see the module docs. `body` is in `origin` coding;
/// `compress` is false for bodies stored only to be shared with waiters (errors), which are
/// kept as the origin sent them.
pub fn prepare(
    body: Bytes,
    origin: Coding,
    content_type: Option<&HeaderValue>,
    config: Compress,
    compress_it: bool,
    limit: u64,
) -> Result<Prepared, CodingError> {
    let target = config.coding();
    let identity = decode(&body, origin, limit)?;
    let identity_len = identity.len() as u64;
    let kept = |body: Bytes, coding: Coding| Prepared {
        body,
        coding,
        identity_len,
        origin_coding: origin,
    };
    if origin != Coding::Identity && (origin == target || !compress_it) {
        // Already in the coding we want (or not ours to change): stored as it came.
        return Ok(kept(body, origin));
    }
    let worth_it = compress_it
        && target != Coding::Identity
        && identity.len() >= MIN_COMPRESS
        && compressible(content_type);
    if worth_it {
        let packed = compress(&identity, target)?;
        // Incompressible after all (already compressed data in a text type): as it is.
        if packed.len() < identity.len() - identity.len() / 16 {
            return Ok(kept(packed, target));
        }
    }
    Ok(kept(identity, Coding::Identity))
}

/// What one client accepts, from its `Accept-Encoding` (RFC 9110 §12.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepts {
    /// Which of [`Coding::ALL`] it accepts (q > 0), by index.
    accepted: [bool; 5],
}

impl Accepts {
    /// Parses every `Accept-Encoding` line. No header: any coding is acceptable to the
    /// RFC, but many clients that send none cannot decode anything, so slate sends them
    /// identity (as nginx and Varnish do).
    pub fn of(headers: &HeaderMap) -> Accepts {
        let mut accepted = [false; 5];
        accepted[Coding::Identity as usize] = true;
        let mut listed = [false; 5];
        let mut star: Option<bool> = None;
        for line in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(line) = line.to_str() else { continue };
            for item in line.split(',') {
                let mut parts = item.split(';');
                // Compared without case, not lower-cased: this runs on every hit.
                let name = parts.next().unwrap_or("").trim();
                let q_ok = parts
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                    .is_none_or(|(_, v)| v.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
                let coding = if name == "*" {
                    star = Some(q_ok);
                    continue;
                } else if name.eq_ignore_ascii_case("x-gzip") {
                    Coding::Gzip
                } else {
                    match Coding::ALL
                        .iter()
                        .find(|c| c.as_str().eq_ignore_ascii_case(name))
                    {
                        Some(c) => *c,
                        None => continue,
                    }
                };
                listed[coding as usize] = true;
                accepted[coding as usize] = q_ok;
            }
        }
        if let Some(star_ok) = star {
            for (i, l) in listed.iter().enumerate() {
                if !l {
                    accepted[i] = star_ok;
                }
            }
        }
        Accepts { accepted }
    }

    pub fn accepts(&self, c: Coding) -> bool {
        self.accepted[c as usize]
    }
}

/// `W/"x"` for a strong `"x"`; a weak tag stays as it is.
pub fn weaken(etag: &HeaderValue) -> HeaderValue {
    if etag.as_bytes().starts_with(b"W/") {
        return etag.clone();
    }
    let mut v = Vec::with_capacity(etag.len() + 2);
    v.extend_from_slice(b"W/");
    v.extend_from_slice(etag.as_bytes());
    HeaderValue::from_bytes(&v).unwrap_or_else(|_| etag.clone())
}

/// Adds `Accept-Encoding` to a response's `Vary`, unless it is there already.
pub fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let listed = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|n| n.trim().eq_ignore_ascii_case("accept-encoding") || n.trim() == "*")
        })
    });
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A stored body decoded as the client reads it, in chunks of at most [`CHUNK`] bytes, so a
/// 2 MB report costs a client without gzip no 2 MB buffer and no long stall of a worker.
pub struct Decoder {
    reader: Box<dyn Read + Send>,
    /// Identity bytes still to come: the stored length, checked as we go.
    left: u64,
}

/// Bytes decoded per frame.
pub const CHUNK: usize = 64 << 10;

impl Decoder {
    /// Decodes `body` (in `coding`, gzip or zstd as slate stores them, or any coding slate
    /// reads) into `identity_len` bytes.
    pub fn new(body: Bytes, coding: Coding, identity_len: u64) -> Option<Decoder> {
        let head = body.slice(..body.len().min(2));
        let reader = decoder(bytes::Buf::reader(body), &head, coding)?;
        Some(Decoder {
            reader,
            left: identity_len,
        })
    }

    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// The next chunk; `None` at the end. A body that decodes to more or less than its
    /// stored length is an error: the client sees a broken transfer, never a wrong body.
    pub fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.left == 0 {
            // Anything after the promised length means the stored body was not ours.
            let mut probe = [0u8; 1];
            return match self.reader.read(&mut probe) {
                Ok(0) => None,
                Ok(_) => Some(Err(std::io::Error::other("body longer than stored"))),
                Err(e) => Some(Err(e)),
            };
        }
        let want = self.left.min(CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        let mut got = 0;
        while got < want {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => {
                    return Some(Err(std::io::Error::other("body shorter than stored")));
                }
                Ok(n) => got += n,
                Err(e) => return Some(Err(e)),
            }
        }
        self.left -= got as u64;
        Some(Ok(buf.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: usize) -> Vec<u8> {
        let mut s = String::from("{\"rows\":[");
        for i in 0..n {
            s.push_str(&format!(
                "{{\"date\":\"2026-11-{:02}\",\"region\":\"{}\",\"sales\":{}}},",
                i % 28 + 1,
                ["eu", "us", "apac"][i % 3],
                i * 7919 % 100_000
            ));
        }
        s.push_str("{}]}");
        s.into_bytes()
    }

    fn json() -> HeaderValue {
        HeaderValue::from_static("application/json; charset=utf-8")
    }

    fn accepts(ae: &[&'static str]) -> Accepts {
        let mut h = HeaderMap::new();
        for v in ae {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        }
        Accepts::of(&h)
    }

    /// The bytes an allocation holds, unused ones included (a `Bytes` shows only its length).
    fn allocated(b: Bytes) -> usize {
        match b.try_into_mut() {
            Ok(m) => m.capacity(),
            Err(_) => panic!("a fresh body is not shared"),
        }
    }

    #[test]
    fn stored_bodies_hold_no_more_memory_than_their_length() {
        // A body compresses to well under the encoder's first guess (a quarter), and
        // decodes to more than the decoder's (four times): both would keep slack.
        let body = report(4000);
        for coding in [Coding::Gzip, Coding::Zstd] {
            let packed = compress(&body, coding).unwrap();
            let len = packed.len();
            assert!(len < body.len() / 8, "{coding:?}: {len} of {}", body.len());
            let plain = decode(&packed, coding, 1 << 30).unwrap();
            assert_eq!(plain, body);
            let held = allocated(packed);
            assert!(held <= len + len / 16, "{coding:?}: {held} bytes for {len}");
            let held = allocated(plain);
            assert!(
                held <= body.len() + body.len() / 16,
                "{coding:?}: {held} for {}",
                body.len()
            );
        }
    }

    fn decode_all(p: &Prepared) -> Vec<u8> {
        let mut d = Decoder::new(p.body.clone(), p.coding, p.identity_len).unwrap();
        let mut out = Vec::new();
        while let Some(c) = d.next_chunk() {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[test]
    fn identity_json_is_stored_compressed_and_decodes_to_itself() {
        let body = report(2000);
        for (config, coding) in [
            (Compress::Gzip, Coding::Gzip),
            (Compress::Zstd, Coding::Zstd),
        ] {
            let p = prepare(
                Bytes::from(body.clone()),
                Coding::Identity,
                Some(&json()),
                config,
                true,
                u64::MAX,
            )
            .unwrap();
            assert_eq!(p.coding, coding);
            assert_eq!(p.identity_len, body.len() as u64);
            assert!(
                p.body.len() * 4 < body.len(),
                "{} of {}",
                p.body.len(),
                body.len()
            );
            assert_eq!(decode_all(&p), body);
            assert_eq!(decode(&p.body, p.coding, u64::MAX).unwrap(), body);
        }
    }

    #[test]
    fn what_is_left_as_it_is() {
        let body = Bytes::from(report(200));
        let keep = |ct: Option<&HeaderValue>, config, compress_it| {
            prepare(
                body.clone(),
                Coding::Identity,
                ct,
                config,
                compress_it,
                u64::MAX,
            )
            .unwrap()
            .coding
        };
        assert_eq!(keep(Some(&json()), Compress::Off, true), Coding::Identity);
        assert_eq!(keep(None, Compress::Gzip, true), Coding::Identity);
        let png = HeaderValue::from_static("image/png");
        assert_eq!(keep(Some(&png), Compress::Gzip, true), Coding::Identity);
        assert_eq!(keep(Some(&json()), Compress::Gzip, false), Coding::Identity);
        let tiny = prepare(
            Bytes::from_static(b"{\"a\":1}"),
            Coding::Identity,
            Some(&json()),
            Compress::Gzip,
            true,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(tiny.coding, Coding::Identity);
        // Random bytes labelled as text do not shrink: kept as they are.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes no coder can shrink
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let p = prepare(
            Bytes::from(noise.clone()),
            Coding::Identity,
            Some(&HeaderValue::from_static("text/plain")),
            Compress::Gzip,
            true,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(p.coding, Coding::Identity);
        assert!(p.body == noise, "stored as it came");
    }

    #[test]
    fn the_origins_own_coding() {
        let body = report(500);
        let gz = compress(&body, Coding::Gzip).unwrap();
        // Ours already: kept byte for byte.
        let p = prepare(
            gz.clone(),
            Coding::Gzip,
            Some(&json()),
            Compress::Gzip,
            true,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(
            (p.coding, &p.body, p.identity_len),
            (Coding::Gzip, &gz, body.len() as u64)
        );
        assert_eq!(p.origin_coding, Coding::Gzip);
        // Not ours: decoded, then stored in ours.
        let p = prepare(
            gz.clone(),
            Coding::Gzip,
            Some(&json()),
            Compress::Zstd,
            true,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(p.coding, Coding::Zstd);
        assert_eq!(decode_all(&p), body);
        // Off: stored identity.
        let p = prepare(
            gz,
            Coding::Gzip,
            Some(&json()),
            Compress::Off,
            true,
            u64::MAX,
        )
        .unwrap();
        assert_eq!((p.coding, p.body.as_ref()), (Coding::Identity, &body[..]));
        // deflate, both the zlib and the raw form.
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&body).unwrap();
        let zlib = z.finish().unwrap();
        assert_eq!(decode(&zlib, Coding::Deflate, u64::MAX).unwrap(), body);
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(&body).unwrap();
        let raw = d.finish().unwrap();
        assert_eq!(decode(&raw, Coding::Deflate, u64::MAX).unwrap(), body);
    }

    #[test]
    fn corrupt_and_oversized_bodies_are_refused() {
        let body = report(500);
        let gz = compress(&body, Coding::Gzip).unwrap();
        let mut torn = gz.to_vec();
        torn.truncate(torn.len() / 2);
        assert!(matches!(
            decode(&torn, Coding::Gzip, u64::MAX),
            Err(CodingError::Corrupt("gzip"))
        ));
        assert!(decode(b"not zstd", Coding::Zstd, u64::MAX).is_err());
        assert!(decode(b"not br at all", Coding::Br, u64::MAX).is_err());
        // A bomb: 1 MB of zeros in a few KB, refused past the limit.
        let bomb = compress(&vec![0u8; 1 << 20], Coding::Gzip).unwrap();
        assert!(bomb.len() < 8 << 10);
        assert_eq!(
            decode(&bomb, Coding::Gzip, 1 << 19),
            Err(CodingError::TooLarge(1 << 19))
        );
        assert_eq!(decode(&bomb, Coding::Gzip, 1 << 20).unwrap().len(), 1 << 20);
        // A stream decoder that finds fewer bytes than promised says so.
        let mut d = Decoder::new(gz.clone(), Coding::Gzip, body.len() as u64 + 1).unwrap();
        let mut failed = false;
        while let Some(c) = d.next_chunk() {
            if c.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a short body is an error, not a silent end");
        let mut d = Decoder::new(gz, Coding::Gzip, body.len() as u64 - 1).unwrap();
        let results: Vec<_> = std::iter::from_fn(|| d.next_chunk()).collect();
        assert!(results.last().unwrap().is_err(), "a long body too");
    }

    #[test]
    fn accept_encoding_negotiation() {
        let chrome = accepts(&["gzip, deflate, br, zstd"]);
        assert!(chrome.accepts(Coding::Gzip) && chrome.accepts(Coding::Zstd));
        let none = accepts(&[]);
        assert!(none.accepts(Coding::Identity) && !none.accepts(Coding::Gzip));
        let refused = accepts(&["gzip;q=0, br"]);
        assert!(!refused.accepts(Coding::Gzip) && refused.accepts(Coding::Br));
        let spaced = accepts(&["br ; q=0.5", "GZIP;Q=1.0"]);
        assert!(spaced.accepts(Coding::Gzip) && spaced.accepts(Coding::Br));
        let star = accepts(&["*;q=0.1, zstd;q=0"]);
        assert!(star.accepts(Coding::Gzip) && !star.accepts(Coding::Zstd));
        assert!(accepts(&["x-gzip"]).accepts(Coding::Gzip));
        assert!(!accepts(&["gzip;q=junk"]).accepts(Coding::Gzip));
        let no_identity = accepts(&["identity;q=0, gzip"]);
        assert!(!no_identity.accepts(Coding::Identity));
    }

    #[test]
    fn content_types() {
        for ct in [
            "application/json",
            "application/vnd.api+json; charset=utf-8",
            "text/csv",
            "TEXT/HTML",
            "application/xml",
            "application/javascript",
        ] {
            assert!(compressible(Some(&HeaderValue::from_static(ct))), "{ct}");
        }
        for ct in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "json",
        ] {
            assert!(!compressible(Some(&HeaderValue::from_static(ct))), "{ct}");
        }
    }

    #[test]
    fn etags_and_vary() {
        assert_eq!(weaken(&HeaderValue::from_static("\"v1\"")), "W/\"v1\"");
        assert_eq!(weaken(&HeaderValue::from_static("W/\"v1\"")), "W/\"v1\"");
        let mut h = HeaderMap::new();
        vary_on_accept_encoding(&mut h);
        vary_on_accept_encoding(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        let mut h = HeaderMap::new();
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Language, accept-encoding"),
        );
        vary_on_accept_encoding(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    }
}
