//! Canonical request bodies and time windows: different spellings of one report request
//! become one cache key ("one report, one computation", issue 14).
//!
//! Pure functions from bytes to bytes; the caller decides which rule applies, limits the
//! body to 64 KiB, hashes [`Canonical::key`] and sends [`Canonical::upstream`] (when there
//! is one) instead of the client's body. An `Err` means "pass through, uncached", and
//! [`BodyError::as_str`] names why for `Cache-Status`.
//!
//! Two bodies share a key only when every origin must read them alike; where that is not
//! certain they stay apart, since a wrong shared answer costs more than one extra fill:
//! - **JSON** ([`canonical_json`]): object members sorted by the UTF-8 bytes of their
//!   (unescaped) names, no insignificant whitespace, arrays kept in order, the
//!   `ignore_body_fields` paths removed, `round_params` paths rounded.
//!   - Numbers stay **as the client wrote them**: `1`, `1.0` and `1e0` are three keys (an
//!     origin may well tell them apart). That is why bodies are read by the small strict
//!     RFC 8259 parser below and not by `serde_json`: keeping number text would need
//!     `serde_json`'s `arbitrary_precision`, a crate-wide feature that changes how every
//!     other `serde_json::Value` in slate holds numbers; `serde_json` also keeps the last
//!     of two equal member names silently; and the parser's byte spans let the upstream
//!     body be the client's own bytes with only the rounded values spliced in.
//!   - Strings are unescaped and printed again as `serde_json` prints them (only `"`, `\`
//!     and control characters escaped: `\n`-style where JSON has a short escape, else
//!     `\u00xx`): `"\u0041"` and `"A"`, `"\/"` and `"/"` are one key. A lone surrogate
//!     escape (`"\ud800"`) is invalid, as in `serde_json`.
//!   - **Duplicate member names** (compared unescaped) make the body invalid
//!     ([`BodyError::DuplicateKey`]): one origin takes the first, another the last.
//!   - Nesting deeper than 64 arrays/objects is invalid ([`BodyError::TooDeep`]), never a
//!     stack overflow. A byte-order mark, `NaN`, comments or trailing commas are invalid.
//! - **GraphQL** ([`canonical_graphql`]): the body is a JSON object, canonical as above,
//!   whose `query` string is replaced by its token sequence (see [`canonical_graphql`]).
//! - **Time windows** ([`round_time`]): epoch seconds, epoch milliseconds or RFC 3339,
//!   rounded down to the bucket and printed back in the client's own form.
//!
//! A [`FieldPath`] (`meta.sentAt`) names object members only: a path does not go through
//! arrays (`items.at` matches nothing inside `"items": [...]`), and a member whose name
//! holds a `.` cannot be named. A path both ignored and rounded is only ignored.

use chrono::{DateTime, Datelike, Timelike};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// How deeply arrays and objects may nest: far more than any report query needs, and few
/// enough that the recursive parser cannot exhaust a task's stack.
const MAX_DEPTH: usize = 64;

/// Below this an all-digit time is epoch seconds, from it epoch milliseconds: 10^11 s is
/// the year 5138, 10^11 ms is March 1973, so no time a report asks about is ambiguous.
const EPOCH_MS_FROM: u64 = 100_000_000_000;
/// From here on an all-digit value is left alone: as milliseconds it would be past the year
/// 5138 again, so it is more likely micro- or nanoseconds, or no time at all.
const EPOCH_MS_UNTIL: u64 = 100_000_000_000_000;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Why a body is not made into a key: the request passes through, uncached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not UTF-8 or not RFC 8259 JSON; the byte offset where reading stopped.
    #[error("body is not valid JSON (at byte {0})")]
    InvalidJson(usize),
    #[error("body has an object with two members of the same name")]
    DuplicateKey,
    #[error("body nests arrays and objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Not a GraphQL request body, or its `query` does not lex; what is wrong.
    #[error("body is not a GraphQL query request: {0}")]
    InvalidGraphql(&'static str),
    /// The document has an operation that is not a query: `"mutation"` or `"subscription"`.
    #[error("GraphQL document has a {0} operation")]
    NotAQuery(&'static str),
}

impl BodyError {
    /// A short slug for `Cache-Status: slate; fwd=bypass; detail=<slug>`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BodyError::InvalidJson(_) => "body-invalid-json",
            BodyError::DuplicateKey => "body-duplicate-key",
            BodyError::TooDeep => "body-too-deep",
            BodyError::InvalidGraphql(_) => "graphql-invalid",
            BodyError::NotAQuery("subscription") => "graphql-subscription",
            BodyError::NotAQuery(_) => "graphql-mutation",
        }
    }
}

/// A body made canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// The canonical bytes the cache key is made from.
    pub key: Vec<u8>,
    /// The body to send upstream instead of the client's, when a rounded value changed:
    /// the client's bytes (member order, whitespace and all) with only the rounded values
    /// replaced. `None` when nothing changed: the client's body goes up as it came.
    pub upstream: Option<Vec<u8>>,
}

/// A dotted path to an object member inside a body: `meta.sentAt`, `params.from`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<String>);

/// A field path with an empty segment (`""`, `a..b`, `.a`, `a.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field path {0:?} has an empty segment")]
pub struct FieldPathError(pub String);

impl FieldPath {
    /// Parses `a.b.c`; every segment must be non-empty.
    pub fn parse(path: &str) -> Result<FieldPath, FieldPathError> {
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(FieldPathError(path.to_owned()));
        }
        Ok(FieldPath(segments))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Rounds a time value down to a multiple of `bucket`, in the value's own form, or `None`
/// when the bucket is zero or the value is no time this reads (the caller keeps it as is).
///
/// - **All ASCII digits**: epoch seconds below 10^11, epoch milliseconds from 10^11 up to
///   10^14; larger numbers, signs (negative times are no report window) and anything past
///   `u64` are not times. The result is printed in the same unit; a value written with
///   leading zeros keeps its width.
/// - **RFC 3339** (`2026-12-02T10:07:31Z`, `2026-12-02t10:07:31.123+02:00`; `T`, `t` or a
///   space between date and time, `Z`, `z` or `±hh:mm`, leap second `:60`): the *instant* is
///   rounded, buckets counted from the Unix epoch, so a `5m` bucket starts at the same
///   instant in every offset (an hour bucket, in `+05:30`, starts at half past). It is
///   printed in the client's offset, with the client's separator, offset spelling (`Z`
///   stays `Z`, `-00:00` stays `-00:00`) and number of fractional digits. A leap second
///   counts as the last instant of the second before it. The result must have a
///   four-digit year, else `None`.
///
/// A bucket finer than the value's precision (or not a multiple of it) gives the bucket's
/// start truncated to that precision: still the same result for every value in one bucket.
pub fn round_time(value: &str, bucket: Duration) -> Option<String> {
    if bucket.is_zero() {
        return None;
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        round_epoch(value, bucket)
    } else {
        round_rfc3339(value, bucket)
    }
}

fn round_epoch(digits: &str, bucket: Duration) -> Option<String> {
    let n: u64 = digits.parse().ok()?;
    let unit: u128 = match n {
        _ if n < EPOCH_MS_FROM => 1_000_000_000,
        _ if n < EPOCH_MS_UNTIL => 1_000_000,
        _ => return None,
    };
    // In nanoseconds, so that any bucket (`1500ms` on seconds too) floors the same way;
    // below 10^14 ms this is below 10^20 and cannot overflow a u128.
    let ns = u128::from(n) * unit;
    let start = ns - ns % bucket.as_nanos();
    let width = if digits.len() > 1 && digits.starts_with('0') {
        digits.len()
    } else {
        0
    };
    Some(format!("{:0width$}", start / unit))
}

fn round_rfc3339(value: &str, bucket: Duration) -> Option<String> {
    // chrono decides validity (calendar, ranges, offsets); what is read here after it
    // accepted the value is only its spelling, at the fixed positions RFC 3339 gives.
    let dt = DateTime::parse_from_rfc3339(value).ok()?;
    let b = value.as_bytes();
    let separator = char::from(*b.get(10)?);
    let fraction = if b.get(19) == Some(&b'.') {
        b.get(20..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    } else {
        0
    };
    let offset = value.get(if fraction > 0 { 20 + fraction } else { 19 }..)?;

    // A leap second (`23:59:60.5`, which chrono holds as 59 s and 1.5e9 ns) counts as the
    // last instant of the second before it, so that rounding never moves it forward.
    let subsec = dt.timestamp_subsec_nanos().min(999_999_999);
    let ns = i128::from(dt.timestamp()) * NANOS_PER_SEC + i128::from(subsec);
    let bucket = i128::try_from(bucket.as_nanos()).ok()?;
    let start = ns - ns.rem_euclid(bucket);
    // Whatever the value cannot show of the bucket's start is cut off.
    let precision = 10i128.pow(9 - fraction.min(9) as u32);
    let start = start - start.rem_euclid(precision);
    let secs = i64::try_from(start.div_euclid(NANOS_PER_SEC)).ok()?;
    let nanos = u32::try_from(start.rem_euclid(NANOS_PER_SEC)).ok()?;
    let local = DateTime::from_timestamp(secs, nanos)?
        .with_timezone(dt.offset())
        .naive_local();
    if !(0..=9999).contains(&local.year()) {
        return None;
    }
    let mut out = format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
    );
    if fraction > 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.get(..fraction.min(9)).unwrap_or_default());
        out.extend(std::iter::repeat_n('0', fraction.saturating_sub(9)));
    }
    out.push_str(offset);
    Some(out)
}

/// Makes a JSON body canonical (see the module doc): `ignore` members are left out of the
/// key, `round` members rounded with [`round_time`] in the key and in the upstream body. A
/// rounded string goes through [`round_time`]; so does a number written as plain digits,
/// and it stays a number; any other value (other numbers, objects, ...) is left alone.
pub fn canonical_json(
    body: &[u8],
    ignore: &[FieldPath],
    round: &[(FieldPath, Duration)],
) -> Result<Canonical, BodyError> {
    let src = std::str::from_utf8(body).map_err(|e| BodyError::InvalidJson(e.valid_up_to()))?;
    let root = Parser::document(src)?;
    let rules = rules(None, ignore, round);
    Ok(emit(src, &root, &rules))
}

/// Makes a GraphQL request body canonical: a JSON object with a string `query` and, when
/// present, an object (or `null`) `variables` and a string (or `null`) `operationName`.
///
/// - The object is canonical as in [`canonical_json`]; members other than these three
///   (`extensions`, ...) are kept in it, canonical JSON too: they may change the answer.
///   `variables` absent, `null` and `{}` stay three keys. A body without `query` (an
///   automatic persisted query by hash alone) is [`BodyError::InvalidGraphql`].
/// - `ignore` and `round` paths are relative to `variables` (`range.from` is
///   `variables.range.from`).
/// - `query` is replaced by its tokens (GraphQL's lexical grammar, October 2021): comments,
///   commas, white space, line ends and a byte-order mark dropped; the tokens joined by one
///   space where both neighbours are names, numbers or strings, and by nothing next to a
///   punctuator. Strings and block strings are kept byte for byte (`"a"` and `"\u0061"`
///   differ). As in the current draft of the spec, strings and comments may hold any
///   Unicode character (not only the Basic Multilingual Plane) and `\u{...}` escapes.
/// - A document with a `mutation` or `subscription` operation, whatever `operationName`
///   picks, is [`BodyError::NotAQuery`]; a `query` that does not lex, has unbalanced
///   brackets or holds anything but operations and fragments is
///   [`BodyError::InvalidGraphql`]. The document is not parsed further: the origin judges it.
/// - The upstream body keeps the client's `query` text; only rounded variables change.
pub fn canonical_graphql(
    body: &[u8],
    ignore: &[FieldPath],
    round: &[(FieldPath, Duration)],
) -> Result<Canonical, BodyError> {
    let src = std::str::from_utf8(body).map_err(|e| BodyError::InvalidJson(e.valid_up_to()))?;
    let mut root = Parser::document(src)?;
    let Val::Obj(members) = &mut root.val else {
        return Err(BodyError::InvalidGraphql("the body is not a JSON object"));
    };
    let query =
        member(members, "query").ok_or(BodyError::InvalidGraphql("the body has no query"))?;
    let Val::Str(text) = &query.val else {
        return Err(BodyError::InvalidGraphql("query is not a string"));
    };
    query.val = Val::Str(Cow::Owned(normalize_query(text)?));
    if let Some(v) = member(members, "variables") {
        if !matches!(v.val, Val::Obj(_) | Val::Raw("null")) {
            return Err(BodyError::InvalidGraphql("variables is not an object"));
        }
    }
    if let Some(v) = member(members, "operationName") {
        if !matches!(v.val, Val::Str(_) | Val::Raw("null")) {
            return Err(BodyError::InvalidGraphql("operationName is not a string"));
        }
    }
    let rules = rules(Some("variables"), ignore, round);
    Ok(emit(src, &root, &rules))
}

fn member<'m, 'a>(
    members: &'m mut [(Cow<'a, str>, Node<'a>)],
    name: &str,
) -> Option<&'m mut Node<'a>> {
    let i = members
        .binary_search_by(|(k, _)| k.as_ref().cmp(name))
        .ok()?;
    members.get_mut(i).map(|(_, n)| n)
}

// ---------------------------------------------------------------------------------------
// JSON: a strict RFC 8259 reader into a tree that borrows from the body.

/// A parsed value and the bytes of the body it was read from.
struct Node<'a> {
    start: usize,
    end: usize,
    val: Val<'a>,
}

enum Val<'a> {
    /// `null`, `true`, `false` or a number, exactly as the client wrote it.
    Raw(&'a str),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    /// Members sorted by name; names are unique (a duplicate is refused while reading).
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn document(src: &'a str) -> Result<Node<'a>, BodyError> {
        let mut p = Parser { src, pos: 0 };
        p.ws();
        let root = p.value(0)?;
        p.ws();
        if p.pos != src.len() {
            return Err(p.err());
        }
        Ok(root)
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn err(&self) -> BodyError {
        BodyError::InvalidJson(self.pos)
    }

    fn slice(&self, start: usize) -> Result<&'a str, BodyError> {
        self.src.get(start..self.pos).ok_or_else(|| self.err())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), BodyError> {
        self.ws();
        if self.peek() != Some(c) {
            return Err(self.err());
        }
        self.pos += 1;
        Ok(())
    }

    /// `depth` is the number of arrays and objects around the value.
    fn value(&mut self, depth: usize) -> Result<Node<'a>, BodyError> {
        let start = self.pos;
        let val = match self.peek() {
            Some(b'{') => self.object(depth + 1)?,
            Some(b'[') => self.array(depth + 1)?,
            Some(b'"') => Val::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => Val::Raw(self.number()?),
            Some(b't') => self.literal("true")?,
            Some(b'f') => self.literal("false")?,
            Some(b'n') => self.literal("null")?,
            _ => return Err(self.err()),
        };
        Ok(Node {
            start,
            end: self.pos,
            val,
        })
    }

    fn literal(&mut self, word: &'static str) -> Result<Val<'a>, BodyError> {
        if !self
            .src
            .get(self.pos..)
            .is_some_and(|s| s.starts_with(word))
        {
            return Err(self.err());
        }
        self.pos += word.len();
        Ok(Val::Raw(word))
    }

    /// Reads an array or an object from its opening bracket to `close`, `item` reading
    /// each element.
    fn sequence(
        &mut self,
        depth: usize,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<(), BodyError>,
    ) -> Result<(), BodyError> {
        if depth > MAX_DEPTH {
            return Err(BodyError::TooDeep);
        }
        self.pos += 1;
        self.ws();
        if self.peek() != Some(close) {
            loop {
                self.ws();
                item(self)?;
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(c) if c == close => break,
                    _ => return Err(self.err()),
                }
            }
        }
        self.pos += 1;
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Val<'a>, BodyError> {
        let mut members = Vec::new();
        self.sequence(depth, b'}', |p| {
            if p.peek() != Some(b'"') {
                return Err(p.err());
            }
            let name = p.string()?;
            p.expect(b':')?;
            p.ws();
            members.push((name, p.value(depth)?));
            Ok(())
        })?;
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(BodyError::DuplicateKey);
        }
        Ok(Val::Obj(members))
    }

    fn array(&mut self, depth: usize) -> Result<Val<'a>, BodyError> {
        let mut items = Vec::new();
        self.sequence(depth, b']', |p| {
            items.push(p.value(depth)?);
            Ok(())
        })?;
        Ok(Val::Arr(items))
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<&'a str, BodyError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        // `01` ends here after `0`; the caller then finds `1` where it wants `,` or the end.
        self.slice(start)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, BodyError> {
        self.pos += 1;
        let start = self.pos;
        // Most strings have no escape: borrow them.
        loop {
            match self.peek() {
                Some(b'"') => {
                    let s = self.slice(start)?;
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0x20..) => self.pos += 1,
                _ => return Err(self.err()),
            }
        }
        let mut out = String::from(self.slice(start)?);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                Some(0x20..) => {
                    let run = self.pos;
                    while matches!(self.peek(), Some(c) if c >= 0x20 && c != b'"' && c != b'\\') {
                        self.pos += 1;
                    }
                    out.push_str(self.slice(run)?);
                }
                _ => return Err(self.err()),
            }
        }
    }

    /// The character an escape after its `\` stands for.
    fn escape(&mut self) -> Result<char, BodyError> {
        let c = self.peek().ok_or_else(|| self.err())?;
        self.pos += 1;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        // Only a trailing surrogate escape may follow a leading one.
                        if self
                            .src
                            .get(self.pos..)
                            .is_some_and(|s| s.starts_with("\\u"))
                        {
                            self.pos += 2;
                        } else {
                            return Err(self.err());
                        }
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err());
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    _ => hi,
                };
                // None for a lone trailing surrogate.
                char::from_u32(code).ok_or_else(|| self.err())?
            }
            _ => return Err(self.err()),
        })
    }

    fn hex4(&mut self) -> Result<u32, BodyError> {
        let hex = self
            .src
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| self.err())?;
        self.pos += 4;
        u32::from_str_radix(hex, 16).map_err(|_| self.err())
    }
}

// ---------------------------------------------------------------------------------------
// Canonical output.

#[derive(Clone, Copy)]
enum Action {
    Ignore,
    Round(Duration),
}

/// A path to act on, as the segments from the root of the body.
struct Rule<'p> {
    segments: Vec<&'p str>,
    action: Action,
}

fn rules<'p>(
    prefix: Option<&'p str>,
    ignore: &'p [FieldPath],
    round: &'p [(FieldPath, Duration)],
) -> Vec<Rule<'p>> {
    let segments = |p: &'p FieldPath| {
        prefix
            .into_iter()
            .chain(p.0.iter().map(String::as_str))
            .collect()
    };
    let ignore = ignore.iter().map(|p| Rule {
        segments: segments(p),
        action: Action::Ignore,
    });
    let round = round.iter().map(|(p, bucket)| Rule {
        segments: segments(p),
        action: Action::Round(*bucket),
    });
    ignore.chain(round).collect()
}

fn emit(src: &str, root: &Node<'_>, rules: &[Rule<'_>]) -> Canonical {
    let mut e = Emitter {
        src: src.as_bytes(),
        key: Vec::with_capacity(src.len()),
        edits: Vec::new(),
    };
    let active: Vec<&Rule<'_>> = rules.iter().collect();
    e.node(root, 0, &active);
    let upstream = (!e.edits.is_empty()).then(|| e.splice());
    Canonical {
        key: e.key,
        upstream,
    }
}

struct Emitter<'s> {
    src: &'s [u8],
    key: Vec<u8>,
    /// Rounded values that differ from the client's text: its byte range and the new text.
    edits: Vec<(usize, usize, Vec<u8>)>,
}

impl Emitter<'_> {
    /// Writes `node`, `depth` object members below the root; `rules` are those whose first
    /// `depth` segments name the way here, and that go on below it.
    fn node(&mut self, node: &Node<'_>, depth: usize, rules: &[&Rule<'_>]) {
        match &node.val {
            Val::Raw(text) => self.key.extend_from_slice(text.as_bytes()),
            Val::Str(s) => write_json_str(&mut self.key, s),
            Val::Arr(items) => {
                self.key.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.key.push(b',');
                    }
                    // Paths do not go through arrays.
                    self.node(item, depth + 1, &[]);
                }
                self.key.push(b']');
            }
            Val::Obj(members) => {
                self.key.push(b'{');
                let mut first = true;
                for (name, child) in members {
                    let (mut ignore, mut round) = (false, None);
                    let mut below = Vec::new();
                    for &rule in rules {
                        if rule.segments.get(depth) != Some(&name.as_ref()) {
                            continue;
                        }
                        if rule.segments.len() > depth + 1 {
                            below.push(rule);
                            continue;
                        }
                        match rule.action {
                            Action::Ignore => ignore = true,
                            Action::Round(bucket) => round = round.or(Some(bucket)),
                        }
                    }
                    if ignore {
                        continue;
                    }
                    if !first {
                        self.key.push(b',');
                    }
                    first = false;
                    write_json_str(&mut self.key, name);
                    self.key.push(b':');
                    if !round.is_some_and(|bucket| self.round(child, bucket)) {
                        self.node(child, depth + 1, &below);
                    }
                }
                self.key.push(b'}');
            }
        }
    }

    /// Writes `node` rounded, when it is a time [`round_time`] reads; false when not.
    fn round(&mut self, node: &Node<'_>, bucket: Duration) -> bool {
        let text = match &node.val {
            Val::Str(s) => round_time(s, bucket).map(|t| {
                let mut v = Vec::with_capacity(t.len() + 2);
                write_json_str(&mut v, &t);
                v
            }),
            // Only plain integers: `1.7e9` is a number no client writes for a time.
            Val::Raw(n) if n.bytes().all(|c| c.is_ascii_digit()) => {
                round_time(n, bucket).map(String::into_bytes)
            }
            _ => None,
        };
        let Some(text) = text else {
            return false;
        };
        if self.src.get(node.start..node.end) != Some(text.as_slice()) {
            self.edits.push((node.start, node.end, text.clone()));
        }
        self.key.extend_from_slice(&text);
        true
    }

    /// The client's body with the edits in place. Edits never overlap: a rounded value is
    /// not looked into.
    fn splice(&mut self) -> Vec<u8> {
        self.edits.sort_unstable_by_key(|e| e.0);
        let mut out = Vec::with_capacity(self.src.len());
        let mut at = 0;
        for (start, end, text) in &self.edits {
            out.extend_from_slice(self.src.get(at..*start).unwrap_or_default());
            out.extend_from_slice(text);
            at = *end;
        }
        out.extend_from_slice(self.src.get(at..).unwrap_or_default());
        out
    }
}

/// Writes `s` as a JSON string the way `serde_json` does.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------------------
// GraphQL: a lexer for the query text, and just enough structure to see the operations.

fn lex_error(what: &'static str) -> BodyError {
    BodyError::InvalidGraphql(what)
}

/// The query's tokens, joined as [`canonical_graphql`] says; refuses what is not a query.
fn normalize_query(src: &str) -> Result<String, BodyError> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut shape = Shape::default();
    let mut last_was_word = false;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let start = i;
        // A word (name, number, string) needs a space before it after another word; a
        // punctuator needs none on either side: that is enough to read the tokens back.
        let word = match c {
            b' ' | b'\t' | b',' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            0xEF if b.get(i..i + 3) == Some("\u{feff}".as_bytes()) => {
                i += 3;
                continue;
            }
            b'#' => {
                i = comment_end(b, i)?;
                continue;
            }
            b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'|'
            | b'}' => {
                i += 1;
                false
            }
            b'.' if b.get(i..i + 3) == Some(b"...") => {
                i += 3;
                false
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                i = name_end(b, i);
                true
            }
            b'-' | b'0'..=b'9' => {
                i = number_end(b, i)?;
                true
            }
            b'"' if b.get(i..i + 3) == Some(b"\"\"\"") => {
                i = block_string_end(b, i)?;
                true
            }
            b'"' => {
                i = string_end(b, i)?;
                true
            }
            _ => return Err(lex_error("unexpected character in the query")),
        };
        let token = src.get(start..i).ok_or(lex_error("bad token"))?;
        if word && last_was_word {
            out.push(' ');
        }
        out.push_str(token);
        last_was_word = word;
        shape.token(token)?;
    }
    shape.finish()?;
    Ok(out)
}

/// Source characters other than line ends, as comments and strings may hold them.
fn is_plain(c: u8) -> bool {
    c >= 0x20 || c == b'\t'
}

fn comment_end(b: &[u8], mut i: usize) -> Result<usize, BodyError> {
    while let Some(&c) = b.get(i) {
        if c == b'\n' || c == b'\r' {
            break;
        }
        if !is_plain(c) {
            return Err(lex_error("control character in a comment"));
        }
        i += 1;
    }
    Ok(i)
}

fn is_name_char(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

fn name_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| is_name_char(c)) {
        i += 1;
    }
    i
}

fn digits_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

fn number_end(b: &[u8], mut i: usize) -> Result<usize, BodyError> {
    let bad = lex_error("malformed number in the query");
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(b, i),
        _ => return Err(bad),
    }
    if b.get(i) == Some(&b'.') {
        let end = digits_end(b, i + 1);
        if end == i + 1 {
            return Err(bad);
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_end(b, i);
        if end == i {
            return Err(bad);
        }
        i = end;
    }
    // The spec forbids a number to run on into a digit, a `.` or a name (`00`, `1.2.3`,
    // `1x`): an error, not two tokens.
    if b.get(i).is_some_and(|&c| c == b'.' || is_name_char(c)) {
        return Err(bad);
    }
    Ok(i)
}

fn string_end(b: &[u8], mut i: usize) -> Result<usize, BodyError> {
    i += 1;
    loop {
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => i = escape_end(b, i + 1)?,
            Some(&c) if is_plain(c) => i += 1,
            Some(_) | None => return Err(lex_error("unterminated string in the query")),
        }
    }
}

/// Where an escape ends, from just after its `\`.
fn escape_end(b: &[u8], i: usize) -> Result<usize, BodyError> {
    let bad = lex_error("bad escape in a string in the query");
    match b.get(i) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 1),
        Some(b'u') if b.get(i + 1) == Some(&b'{') => {
            // `\u{1F600}`: hex digits (leading zeros allowed) naming a Unicode scalar value.
            let digits = b.get(i + 2..).unwrap_or_default();
            let n = digits.iter().take_while(|c| c.is_ascii_hexdigit()).count();
            let value = std::str::from_utf8(digits.get(..n).unwrap_or_default())
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32);
            match (value, digits.get(n)) {
                (Some(_), Some(b'}')) => Ok(i + 2 + n + 1),
                _ => Err(bad),
            }
        }
        Some(b'u') => match b.get(i + 1..i + 5) {
            Some(h) if h.iter().all(u8::is_ascii_hexdigit) => Ok(i + 5),
            _ => Err(bad),
        },
        _ => Err(bad),
    }
}

fn block_string_end(b: &[u8], mut i: usize) -> Result<usize, BodyError> {
    i += 3;
    loop {
        let rest = b.get(i..).unwrap_or_default();
        if rest.starts_with(b"\\\"\"\"") {
            i += 4;
        } else if rest.starts_with(b"\"\"\"") {
            return Ok(i + 3);
        } else {
            match rest.first() {
                Some(&c) if is_plain(c) || c == b'\n' || c == b'\r' => i += 1,
                Some(_) => return Err(lex_error("control character in a block string")),
                None => return Err(lex_error("unterminated block string in the query")),
            }
        }
    }
}

/// What the document is made of, from its tokens: its definitions and their brackets.
#[derive(Default)]
struct Shape {
    /// The open brackets.
    open: Vec<u8>,
    /// Between definitions, where the next token starts one.
    between: bool,
    definitions: usize,
}

impl Shape {
    fn token(&mut self, token: &str) -> Result<(), BodyError> {
        if self.open.is_empty() && (self.between || self.definitions == 0) {
            match token {
                // Only a keyword at the start of a definition is an operation type: `query
                // mutation { mutation }` is a query named `mutation` asking for a field
                // `mutation`.
                "query" | "fragment" | "{" => {}
                "mutation" => return Err(BodyError::NotAQuery("mutation")),
                "subscription" => return Err(BodyError::NotAQuery("subscription")),
                _ => return Err(lex_error("the query holds something other than operations")),
            }
            self.between = false;
            self.definitions += 1;
        }
        let unbalanced = lex_error("unbalanced brackets in the query");
        match token.as_bytes() {
            [c @ (b'{' | b'(' | b'[')] => self.open.push(*c),
            [c @ (b'}' | b')' | b']')] => {
                let Some(opened) = self.open.pop() else {
                    return Err(unbalanced);
                };
                if !matches!((opened, c), (b'{', b'}') | (b'(', b')') | (b'[', b']')) {
                    return Err(unbalanced);
                }
                // Every executable definition ends with its selection set.
                self.between = self.open.is_empty() && *c == b'}';
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), BodyError> {
        if self.definitions == 0 || !self.open.is_empty() || !self.between {
            return Err(lex_error("the query is empty or incomplete"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN5: Duration = Duration::from_secs(300);

    fn paths(list: &[&str]) -> Vec<FieldPath> {
        list.iter().map(|p| FieldPath::parse(p).unwrap()).collect()
    }

    fn key(body: &str) -> String {
        String::from_utf8(canonical_json(body.as_bytes(), &[], &[]).unwrap().key).unwrap()
    }

    fn gql(body: &str) -> Result<String, BodyError> {
        canonical_graphql(body.as_bytes(), &[], &[]).map(|c| String::from_utf8(c.key).unwrap())
    }

    /// The normalized query text of a GraphQL body whose query is `query`.
    fn query(query: &str) -> Result<String, BodyError> {
        let body = serde_json::json!({ "query": query }).to_string();
        let key = gql(&body)?;
        let v: serde_json::Value = serde_json::from_str(&key).unwrap();
        Ok(v["query"].as_str().unwrap().to_owned())
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            FieldPath::parse("meta.sentAt").unwrap().0,
            ["meta", "sentAt"]
        );
        assert_eq!(FieldPath::parse("from").unwrap().to_string(), "from");
        for bad in ["", ".", "a..b", ".a", "a."] {
            assert_eq!(
                FieldPath::parse(bad),
                Err(FieldPathError(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn round_time_table() {
        let h = Duration::from_secs(3600);
        #[rustfmt::skip]
        let rows: &[(&str, Duration, Option<&str>)] = &[
            // Epoch seconds.
            ("1764669451", MIN5, Some("1764669300")),
            ("1764669300", MIN5, Some("1764669300")),
            ("1764669451", h, Some("1764666000")),
            ("0", MIN5, Some("0")),
            ("299", MIN5, Some("0")),
            ("99999999999", Duration::from_secs(1), Some("99999999999")),
            ("0001764669451", MIN5, Some("0001764669300")),
            ("00", MIN5, Some("00")),
            // Epoch milliseconds.
            ("1764669451123", MIN5, Some("1764669300000")),
            ("1764669451123", Duration::from_millis(1), Some("1764669451123")),
            ("1764669451123", Duration::from_millis(100), Some("1764669451100")),
            ("100000000000", MIN5, Some("99999900000")),
            ("99999999999999", Duration::from_secs(1), Some("99999999999000")),
            // Finer than the unit: the bucket's start, cut to whole seconds.
            ("1764669451", Duration::from_millis(1500), Some("1764669450")),
            // Not times: too large for ms, signs, overflow, not numbers.
            ("100000000000000", MIN5, None),
            ("1764669451000000", MIN5, None),
            ("18446744073709551616", MIN5, None),
            ("-1764669451", MIN5, None),
            ("+1764669451", MIN5, None),
            ("1764669451.5", MIN5, None),
            ("", MIN5, None),
            (" 1764669451", MIN5, None),
            ("١٢٣", MIN5, None),
            ("now", MIN5, None),
            // A zero bucket rounds nothing.
            ("1764669451", Duration::ZERO, None),
            ("2026-12-02T10:07:31Z", Duration::ZERO, None),
            // RFC 3339, Z.
            ("2026-12-02T10:07:31Z", MIN5, Some("2026-12-02T10:05:00Z")),
            ("2026-12-02t10:07:31z", MIN5, Some("2026-12-02t10:05:00z")),
            ("2026-12-02 10:07:31Z", MIN5, Some("2026-12-02 10:05:00Z")),
            ("2026-12-02T10:07:31.123Z", MIN5, Some("2026-12-02T10:05:00.000Z")),
            ("2026-12-02T10:07:31.123Z", Duration::from_millis(100), Some("2026-12-02T10:07:31.100Z")),
            ("2026-12-02T10:07:31.123456789123Z", Duration::from_nanos(1), Some("2026-12-02T10:07:31.123456789000Z")),
            ("2026-12-02T10:07:31Z", Duration::from_millis(1), Some("2026-12-02T10:07:31Z")),
            ("2026-12-02T00:07:31Z", Duration::from_secs(86400), Some("2026-12-02T00:00:00Z")),
            // Offsets: the instant is rounded and shown in the client's offset.
            ("2026-12-02T10:07:31+02:00", MIN5, Some("2026-12-02T10:05:00+02:00")),
            ("2026-12-02T10:07:31.5-00:00", MIN5, Some("2026-12-02T10:05:00.0-00:00")),
            ("2026-12-02T10:07:31+00:00", MIN5, Some("2026-12-02T10:05:00+00:00")),
            ("2026-12-02T10:37:31+05:30", h, Some("2026-12-02T10:30:00+05:30")),
            ("2026-12-02T10:07:31+05:30", h, Some("2026-12-02T09:30:00+05:30")),
            ("2026-12-02T10:07:31.123+02:00", Duration::from_secs(86400), Some("2026-12-02T02:00:00.000+02:00")),
            ("2026-01-01T00:07:31+02:00", Duration::from_secs(86400), Some("2025-12-31T02:00:00+02:00")),
            // A leap second is a time too.
            ("2016-12-31T23:59:60Z", MIN5, Some("2016-12-31T23:55:00Z")),
            ("2016-12-31T23:59:60.5Z", Duration::from_secs(1), Some("2016-12-31T23:59:59.0Z")),
            // Out of range after rounding, or not RFC 3339.
            ("0000-01-01T00:00:00+01:00", MIN5, Some("0000-01-01T00:00:00+01:00")),
            ("0000-01-01T00:30:00+01:00", Duration::from_secs(86400), None),
            ("0000-01-01T01:07:00+01:00", MIN5, Some("0000-01-01T01:05:00+01:00")),
            ("2026-02-30T10:07:31Z", MIN5, None),
            ("2026-12-02T24:07:31Z", MIN5, None),
            ("2026-12-02T10:07:31", MIN5, None),
            ("2026-12-02T10:07:31+0200", MIN5, None),
            ("2026-12-02T10:07:31+24:00", MIN5, None),
            ("2026-12-02T10:07:31.Z", MIN5, None),
            ("2026-12-02", MIN5, None),
            ("2026-12-02T10:07:31Z ", MIN5, None),
            ("yesterday", MIN5, None),
        ];
        for (value, bucket, want) in rows {
            assert_eq!(
                round_time(value, *bucket).as_deref(),
                *want,
                "{value:?} by {bucket:?}"
            );
        }
    }

    #[test]
    fn round_time_agrees_across_offsets_and_within_a_bucket() {
        let a = round_time("2026-12-02T10:07:31+02:00", MIN5).unwrap();
        let b = round_time("2026-12-02T08:09:59Z", MIN5).unwrap();
        let ta = DateTime::parse_from_rfc3339(&a).unwrap();
        let tb = DateTime::parse_from_rfc3339(&b).unwrap();
        assert_eq!(ta, tb);
        for s in 1_764_669_300..1_764_669_600u64 {
            assert_eq!(round_time(&s.to_string(), MIN5).unwrap(), "1764669300");
        }
    }

    #[test]
    fn round_time_never_panics() {
        let huge = "9".repeat(70_000);
        let values = [
            huge.as_str(),
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59",
            "2026-12-02T10:07:31.ééZ",
            "2026-12-02T10:07:31é",
            "2026-12-02Té0:07:31Z",
            "\u{0}",
        ];
        let buckets = [
            Duration::from_nanos(1),
            Duration::from_secs(1),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ];
        for v in values {
            for b in buckets {
                let _ = round_time(v, b);
            }
        }
        assert_eq!(
            round_time("1764669451", Duration::MAX).as_deref(),
            Some("0")
        );
        assert_eq!(
            round_time("2026-12-02T10:07:31Z", Duration::MAX).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn same_report_spelled_differently_is_one_key() {
        let want = r#"{"a":1,"b":{"c":[3,1,2],"d":"x"},"e":null}"#;
        for body in [
            r#"{"a":1,"b":{"c":[3,1,2],"d":"x"},"e":null}"#,
            r#"{"e":null,"b":{"d":"x","c":[3,1,2]},"a":1}"#,
            " {\n\t\"a\" : 1 ,\r\n \"b\":{ \"c\" :[ 3 ,1, 2 ] , \"d\":\"x\" },\"e\" :null } \n",
            r#"{"\u0061":1,"b":{"c":[3,1,2],"d":"\u0078"},"e":null}"#,
        ] {
            assert_eq!(key(body), want, "{body}");
        }
        // Escapes normalize to serde_json's spelling.
        assert_eq!(
            key(r#""\/\u00e9\u20AC\ud83d\ude00\t\u0001\"""#),
            "\"/é€😀\\t\\u0001\\\"\""
        );
        // Keys sort by their UTF-8 bytes.
        assert_eq!(
            key(r#"{"é":1,"z":2,"Z":3,"":4}"#),
            r#"{"":4,"Z":3,"z":2,"é":1}"#
        );
        assert_eq!(key(" [ ] "), "[]");
        assert_eq!(key("{ }"), "{}");
        assert_eq!(key(" 7 "), "7");
    }

    #[test]
    fn different_reports_are_different_keys() {
        let pairs = [
            (r#"{"a":[1,2]}"#, r#"{"a":[2,1]}"#),
            (r#"{"a":1}"#, r#"{"a":1.0}"#),
            (r#"{"a":1}"#, r#"{"a":1e0}"#),
            (r#"{"a":1e5}"#, r#"{"a":1E5}"#),
            (r#"{"a":-0}"#, r#"{"a":0}"#),
            (r#"{"a":"1"}"#, r#"{"a":1}"#),
            (r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"x "}"#, r#"{"a":"x"}"#),
            (r#"{"a":{"b":1}}"#, r#"{"a.b":1}"#),
            (r#"[{"a":1}]"#, r#"{"a":1}"#),
        ];
        for (a, b) in pairs {
            assert_ne!(key(a), key(b), "{a} vs {b}");
        }
    }

    #[test]
    fn write_json_str_prints_as_serde_json() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀\u{7f}\u{2028}\u{feff}");
        for s in [all.as_str(), "", "plain", "\"\\"] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn ignored_fields_leave_the_key() {
        let ignore = paths(&["requestId", "meta.sentAt", "meta.client.id", "absent.path"]);
        let k = |body: &str| canonical_json(body.as_bytes(), &ignore, &[]).unwrap().key;
        let a = k(r#"{"q":"sales","requestId":"r1","meta":{"sentAt":1,"tz":"UTC"}}"#);
        let b = k(r#"{"meta":{"tz":"UTC","sentAt":2},"q":"sales","requestId":"r2"}"#);
        let c = k(r#"{"meta":{"tz":"UTC"},"q":"sales"}"#);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, br#"{"meta":{"tz":"UTC"},"q":"sales"}"#);
        // A nested path inside a member that is not an object, and through arrays: no match.
        assert_eq!(k(r#"{"meta":5}"#), br#"{"meta":5}"#);
        assert_eq!(
            k(r#"{"meta":[{"sentAt":1}],"x":{"meta":{"sentAt":1}}}"#),
            br#"{"meta":[{"sentAt":1}],"x":{"meta":{"sentAt":1}}}"#
        );
        assert_eq!(
            k(r#"{"meta":{"client":{"id":1,"v":2}}}"#),
            br#"{"meta":{"client":{"v":2}}}"#
        );
        // The upstream body is the client's: ignoring is for the key only.
        let c = canonical_json(br#"{"requestId":"r1"}"#, &ignore, &[]).unwrap();
        assert_eq!(c.upstream, None);
    }

    #[test]
    fn rounded_fields_change_key_and_upstream_only_there() {
        let round = [
            (FieldPath::parse("params.from").unwrap(), MIN5),
            (FieldPath::parse("params.to").unwrap(), MIN5),
            (FieldPath::parse("at").unwrap(), MIN5),
        ];
        let ignore = paths(&["requestId"]);
        let body = "{ \"requestId\": \"r9\",\n  \"params\": {\"to\": 1764669451123, \"from\": \"2026-12-02T10:07:31+02:00\", \"n\": 1764669451},\n  \"at\": \"1764669451\" }";
        let c = canonical_json(body.as_bytes(), &ignore, &round).unwrap();
        assert_eq!(
            String::from_utf8(c.key).unwrap(),
            r#"{"at":"1764669300","params":{"from":"2026-12-02T10:05:00+02:00","n":1764669451,"to":1764669300000}}"#
        );
        assert_eq!(
            String::from_utf8(c.upstream.unwrap()).unwrap(),
            "{ \"requestId\": \"r9\",\n  \"params\": {\"to\": 1764669300000, \"from\": \"2026-12-02T10:05:00+02:00\", \"n\": 1764669451},\n  \"at\": \"1764669300\" }"
        );

        // Two clients in one bucket: one key.
        let k = |b: &str| canonical_json(b.as_bytes(), &[], &round).unwrap().key;
        assert_eq!(k(r#"{"at":1764669301}"#), k(r#"{"at":1764669599}"#));
        assert_ne!(k(r#"{"at":1764669301}"#), k(r#"{"at":1764669600}"#));

        // Already on a bucket boundary, or not a time: no upstream body.
        for body in [
            r#"{"at":1764669300}"#,
            r#"{"at":"2026-12-02T10:05:00Z"}"#,
            r#"{"at":"soon"}"#,
            r#"{"at":1.7e9}"#,
            r#"{"at":-1764669451}"#,
            r#"{"at":{"t":1764669451}}"#,
            r#"{"at":[1764669451]}"#,
            r#"{"at":true}"#,
        ] {
            let c = canonical_json(body.as_bytes(), &[], &round).unwrap();
            assert_eq!(c.upstream, None, "{body}");
            assert_eq!(c.key, key(body).into_bytes(), "{body}");
        }
        // A string rounded to the same value but spelled with escapes is rewritten.
        let c = canonical_json(br#"{"at":"2026-12-02T10:05:00\u005a"}"#, &[], &round).unwrap();
        assert_eq!(c.upstream.unwrap(), br#"{"at":"2026-12-02T10:05:00Z"}"#);
        // Ignored and rounded: only ignored.
        let c = canonical_json(br#"{"at":1764669451}"#, &paths(&["at"]), &round).unwrap();
        assert_eq!((c.key, c.upstream), (b"{}".to_vec(), None));
    }

    #[test]
    fn duplicate_keys_are_invalid() {
        for body in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"x":{"a":1,"\u0061":2}}"#,
            r#"[{"a":1,"a":2}]"#,
        ] {
            assert_eq!(
                canonical_json(body.as_bytes(), &[], &[]),
                Err(BodyError::DuplicateKey),
                "{body}"
            );
        }
        assert!(canonical_json(br#"{"a":{"a":1}}"#, &[], &[]).is_ok());
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(canonical_json(ok.as_bytes(), &[], &[]).is_ok());
        for n in [MAX_DEPTH + 1, 1000, 100_000] {
            let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
            assert_eq!(
                canonical_json(deep.as_bytes(), &[], &[]),
                Err(BodyError::TooDeep)
            );
            let open = "{\"a\":".repeat(n);
            assert_eq!(
                canonical_json(open.as_bytes(), &[], &[]),
                Err(BodyError::TooDeep)
            );
        }
    }

    #[test]
    fn nasty_inputs_are_errors_not_panics() {
        let big = format!("\"{}\"", "x".repeat(64 * 1024));
        assert_eq!(key(&big), big);
        let invalid: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"}",
            b"[",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\ud800x\"",
            b"\"\\u12\"",
            b"\"\\x\"",
            b"\"abc",
            b"\"a\nb\"",
            b"\"\\",
            b"NaN",
            b"-Infinity",
            b"[NaN]",
            b"nul",
            b"truex",
            b"01",
            b"-",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"+1",
            b"0x10",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{'a':1}",
            b"[1 2]",
            b"1 2",
            b"\xef\xbb\xbf{}",
            b"{\"a\":\"\xff\"}",
            b"\xc3",
            b"/* c */ {}",
            b"{\"a\":1}x",
        ];
        for body in invalid {
            let got = canonical_json(body, &[], &[]);
            assert!(
                matches!(got, Err(BodyError::InvalidJson(_))),
                "{:?}: {got:?}",
                String::from_utf8_lossy(body)
            );
            assert!(canonical_graphql(body, &[], &[]).is_err());
        }
        let unclosed = [b'['; 1000];
        assert_eq!(canonical_json(&unclosed, &[], &[]), Err(BodyError::TooDeep));
        assert_eq!(
            canonical_json(&unclosed[..10], &[], &[]),
            Err(BodyError::InvalidJson(10))
        );
        // Huge exponents and long numbers are kept as written.
        for n in [
            "1e999999999",
            "-1E-999999999",
            "123456789012345678901234567890.5e-3",
        ] {
            assert_eq!(key(&format!("[{n}]")), format!("[{n}]"));
        }
    }

    #[test]
    fn graphql_same_query_spelled_differently() {
        let want = r#"{"operationName":"Sales","query":"query Sales($from:String!$n:Int=10){report(from:$from first:$n){rows{region total}}}","variables":{"from":"2026-12-01","n":5}}"#;
        for body in [
            r#"{"query":"query Sales($from: String!, $n: Int = 10) { report(from: $from, first: $n) { rows { region total } } }","variables":{"n":5,"from":"2026-12-01"},"operationName":"Sales"}"#,
            "{\"operationName\":\"Sales\",\"variables\":{\"from\":\"2026-12-01\",\"n\":5},\"query\":\"\\ufeff# the sales report\\nquery Sales(\\n  $from: String!\\n  $n: Int = 10\\n) {\\n  report(from: $from, first: $n) {\\n    rows { region, total } # both\\n  }\\n}\\n\"}",
            r#"{"query":"query Sales($from:String!$n:Int=10){report(from:$from first:$n){rows{region total}}}","operationName":"Sales","variables":{"from":"2026-12-01","n":5}}"#,
            r#"{"query":"query Sales($from:String!,,,$n:Int=10)\r\n{report(from:$from,first:$n){rows{region,total}}}","operationName":"Sales","variables":{"from":"2026-12-01","n":5}}"#,
        ] {
            assert_eq!(gql(body).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn graphql_token_joining() {
        let rows = [
            ("{ a }", "{a}"),
            ("{ a b c }", "{a b c}"),
            (
                "query Q { f(x: 1, y: -2.5e3, z: \"s\", w: [1 2 3], v: true) }",
                "query Q{f(x:1 y:-2.5e3 z:\"s\" w:[1 2 3]v:true)}",
            ),
            ("{ f(a: [\"x\" \"y\"]) }", "{f(a:[\"x\" \"y\"])}"),
            (
                "{ f(a: \"\" b: \"\"\"\"\"\") }",
                "{f(a:\"\" b:\"\"\"\"\"\")}",
            ),
            (
                "{ ... on T { a } ...F @include(if: $x) }",
                "{...on T{a}...F@include(if:$x)}",
            ),
            (
                "query ($v: [Int!]! = [1]) @d { a }",
                "query($v:[Int!]!=[1])@d{a}",
            ),
            (
                "fragment F on T { a } query { ...F }",
                "fragment F on T{a}query{...F}",
            ),
            ("{ a(x: 0) b(x: -0) }", "{a(x:0)b(x:-0)}"),
            // Strings and block strings byte for byte, escapes and all.
            ("{ a(s: \"x  y\\u0041\\n\") }", "{a(s:\"x  y\\u0041\\n\")}"),
            ("{ a(s: \"\\u{1F600}😀\") }", "{a(s:\"\\u{1F600}😀\")}"),
            (
                "{ a(s: \"\"\"\n  line # not a comment\n  \\\"\"\" \"\" \"\"\") }",
                "{a(s:\"\"\"\n  line # not a comment\n  \\\"\"\" \"\" \"\"\")}",
            ),
            (
                "query mutation { mutation subscription }",
                "query mutation{mutation subscription}",
            ),
        ];
        for (q, want) in rows {
            assert_eq!(query(q).unwrap(), want, "{q}");
        }
    }

    #[test]
    fn graphql_different_reports_differ() {
        let pairs = [
            (
                r#"{"query":"{ a(s: \"x y\") }"}"#,
                r#"{"query":"{ a(s: \"x  y\") }"}"#,
            ),
            (
                r#"{"query":"{ a(s: \"A\") }"}"#,
                r#"{"query":"{ a(s: \"\\u0041\") }"}"#,
            ),
            (r#"{"query":"{ a b }"}"#, r#"{"query":"{ ab }"}"#),
            (r#"{"query":"{ a(x: 1) }"}"#, r#"{"query":"{ a(x: 1.0) }"}"#),
            (
                r#"{"query":"query A { a } query B { b }","operationName":"A"}"#,
                r#"{"query":"query A { a } query B { b }","operationName":"B"}"#,
            ),
            (
                r#"{"query":"{ a }","operationName":null}"#,
                r#"{"query":"{ a }"}"#,
            ),
            (
                r#"{"query":"{ a }","variables":{"x":[1,2]}}"#,
                r#"{"query":"{ a }","variables":{"x":[2,1]}}"#,
            ),
            (
                r#"{"query":"{ a }","extensions":{"x":1}}"#,
                r#"{"query":"{ a }"}"#,
            ),
        ];
        for (a, b) in pairs {
            assert_ne!(gql(a).unwrap(), gql(b).unwrap(), "{a} vs {b}");
        }
        // Other members are kept, canonical.
        assert_eq!(
            gql(r#"{"extensions":{"b":1, "a":2},"query":"{a}"}"#).unwrap(),
            r#"{"extensions":{"a":2,"b":1},"query":"{a}"}"#
        );
    }

    #[test]
    fn graphql_mutations_and_subscriptions_are_refused() {
        let mutation = Err(BodyError::NotAQuery("mutation"));
        let subscription = Err(BodyError::NotAQuery("subscription"));
        let rows = [
            ("mutation { delete(id: 1) }", &mutation),
            ("mutation M($id: ID!) { delete(id: $id) }", &mutation),
            ("# comment\n  mutation{a}", &mutation),
            ("query Q { a } mutation M { b }", &mutation),
            ("{ a } mutation { b }", &mutation),
            ("fragment F on T { a } mutation { ...F }", &mutation),
            ("subscription { ticks }", &subscription),
            ("query Q { a }, subscription S { b }", &subscription),
        ];
        for (q, want) in rows {
            assert_eq!(&query(q), want, "{q}");
        }
        assert_eq!(
            BodyError::NotAQuery("mutation").as_str(),
            "graphql-mutation"
        );
        assert_eq!(
            BodyError::NotAQuery("subscription").as_str(),
            "graphql-subscription"
        );
        // Also when operationName picks the query.
        let body = r#"{"query":"query Q { a } mutation M { b }","operationName":"Q"}"#;
        assert_eq!(gql(body), mutation);
    }

    #[test]
    fn graphql_invalid() {
        for q in [
            "",
            "   # only a comment",
            "{ a",
            "{ a }}",
            "{ a ) }",
            "{ a(s: \"unterminated) }",
            "{ a(s: \"line\nbreak\") }",
            "{ a(s: \"\"\"unterminated) }",
            "{ a(s: \"\\q\") }",
            "{ a(s: \"\\u12\") }",
            "{ a(s: \"\\u{110000}\") }",
            "{ a(s: \"\\u{D800}\") }",
            "{ a(s: \"\\u{}\") }",
            "{ a(s: \"\\u{41\") }",
            "{ a(x: 00) }",
            "{ a(x: 1.) }",
            "{ a(x: .5) }",
            "{ a(x: 1x) }",
            "{ a(x: 1.5.5) }",
            "{ a(x: 1e) }",
            "{ a(x: -) }",
            "{ a(x: 0x10) }",
            "{ a .. b }",
            "{ a ; }",
            "{ a(s: 'x') }",
            "{ é }",
            "{ a }\u{0}",
            "{ a } # \u{1}",
            "query",
            "query Q",
            "query Q($a: Int)",
            "type Query { a: Int }",
            "\"description\" query { a }",
            "Q { a }",
        ] {
            let got = query(q);
            assert!(
                matches!(got, Err(BodyError::InvalidGraphql(_))),
                "{q:?}: {got:?}"
            );
        }
        for body in [
            "[]",
            "\"{ a }\"",
            r#"{}"#,
            r#"{"query":null}"#,
            r#"{"query":{"a":1}}"#,
            r#"{"query":"{a}","variables":[1]}"#,
            r#"{"query":"{a}","variables":"{}"}"#,
            r#"{"query":"{a}","operationName":1}"#,
            r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"ab"}}}"#,
        ] {
            let got = gql(body);
            assert!(
                matches!(got, Err(BodyError::InvalidGraphql(_))),
                "{body}: {got:?}"
            );
        }
        assert_eq!(
            gql(r#"{"query":"{a}","query":"{b}"}"#),
            Err(BodyError::DuplicateKey)
        );
        assert!(gql(r#"{"query":"{a}","variables":null,"operationName":null}"#).is_ok());
    }

    #[test]
    fn graphql_variables_paths() {
        let ignore = paths(&["traceId"]);
        let round = [(FieldPath::parse("range.from").unwrap(), MIN5)];
        let body = br#"{"query":"query R($range: Range) { r(range: $range) }",
            "variables": {"traceId": "t1", "range": {"from": 1764669451, "to": 1764669999}},
            "traceId": "kept: not inside variables"}"#;
        let c = canonical_graphql(body, &ignore, &round).unwrap();
        assert_eq!(
            String::from_utf8(c.key).unwrap(),
            r#"{"query":"query R($range:Range){r(range:$range)}","traceId":"kept: not inside variables","variables":{"range":{"from":1764669300,"to":1764669999}}}"#
        );
        let up = String::from_utf8(c.upstream.unwrap()).unwrap();
        assert_eq!(
            up,
            String::from_utf8_lossy(body).replace("1764669451", "1764669300")
        );
        // Nothing rounded: no upstream body.
        let c = canonical_graphql(
            br#"{"query":"{a}","variables":{"range":{"from":1764669300}}}"#,
            &ignore,
            &round,
        )
        .unwrap();
        assert_eq!(c.upstream, None);
    }

    #[test]
    fn slugs_and_messages() {
        let rows = [
            (BodyError::InvalidJson(3), "body-invalid-json"),
            (BodyError::DuplicateKey, "body-duplicate-key"),
            (BodyError::TooDeep, "body-too-deep"),
            (BodyError::InvalidGraphql("x"), "graphql-invalid"),
        ];
        for (e, slug) in rows {
            assert_eq!(e.as_str(), slug);
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            BodyError::TooDeep.to_string(),
            "body nests arrays and objects deeper than 64 levels"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(any::<String>(), inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Compact and pretty printing of one value give one key, which reads back as
            /// that value, and is its own canonical form.
            #[test]
            fn spellings_share_a_key(v in json_value()) {
                let compact = serde_json::to_vec(&v).unwrap();
                let pretty = serde_json::to_vec_pretty(&v).unwrap();
                let a = canonical_json(&compact, &[], &[]).unwrap().key;
                let b = canonical_json(&pretty, &[], &[]).unwrap().key;
                prop_assert_eq!(&a, &b);
                // As serde_json reads the client's text: it does not read every float
                // back to the bits it printed.
                let back: serde_json::Value = serde_json::from_slice(&a).unwrap();
                let sent: serde_json::Value = serde_json::from_slice(&compact).unwrap();
                prop_assert_eq!(back, sent);
                prop_assert_eq!(canonical_json(&a, &[], &[]).unwrap().key, a);
            }

            /// What serde_json refuses is refused here too, and what it accepts is accepted
            /// unless it has duplicate names, nests too deeply or has numbers past f64.
            #[test]
            fn accepts_what_serde_json_accepts(
                s in r#"[\[\]{}",:0-9eE+\-. tfrulnsa\\\n]{0,24}"#
            ) {
                let ours = canonical_json(s.as_bytes(), &[], &[]);
                match serde_json::from_str::<serde_json::Value>(&s) {
                    Ok(v) => match ours {
                        Ok(c) => {
                            let back: serde_json::Value = serde_json::from_slice(&c.key).unwrap();
                            prop_assert_eq!(back, v);
                        }
                        Err(e) => prop_assert!(
                            e == BodyError::DuplicateKey || e == BodyError::TooDeep,
                            "{s:?}: {e:?}"
                        ),
                    },
                    Err(e) if e.to_string().contains("out of range") => {}
                    Err(_) => prop_assert!(ours.is_err(), "{s:?} accepted"),
                }
            }

            /// The same on valid JSON with one byte changed: near misses are where a
            /// hand-written reader goes wrong.
            #[test]
            fn near_misses_agree_with_serde_json(
                v in json_value(),
                at in any::<prop::sample::Index>(),
                byte in prop::sample::select(&b"{}[]\",:0-9.eE+-\\u tfn\x01"[..]),
                delete in any::<bool>(),
            ) {
                let mut body = serde_json::to_vec(&v).unwrap();
                let i = at.index(body.len());
                if delete {
                    body.remove(i);
                } else {
                    body.insert(i, byte);
                }
                let ours = canonical_json(&body, &[], &[]);
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(_) => prop_assert!(
                        !matches!(ours, Err(BodyError::InvalidJson(_))),
                        "{:?}: {ours:?}", String::from_utf8_lossy(&body)
                    ),
                    Err(e) if e.to_string().contains("out of range") => {}
                    Err(_) => prop_assert!(ours.is_err(), "{:?} accepted", String::from_utf8_lossy(&body)),
                }
            }

            #[test]
            fn graphql_never_panics(s in "\\PC{0,40}") {
                let body = serde_json::json!({ "query": s }).to_string();
                let _ = canonical_graphql(body.as_bytes(), &[], &[]);
            }

            #[test]
            fn round_time_never_panics_nor_rounds_up(n in any::<u64>(), secs in 0u64..100_000) {
                let b = Duration::from_secs(secs);
                if let Some(r) = round_time(&n.to_string(), b) {
                    prop_assert!(r.parse::<u64>().unwrap() <= n);
                }
            }
        }
    }
}
