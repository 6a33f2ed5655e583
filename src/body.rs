//! The one body type slate sends, both to clients and to the upstream.
//!
//! An enum rather than a boxed trait object: a hit is `Full` (a refcounted `Bytes` shared
//! with the stored entry, never copied), a pass-through streams hyper's `Incoming`, and an
//! oversize fill streams through a channel fed by the fill task.

use crate::coding::{has_slack, Decoder};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    /// Chunks from a fill task; an `Err` aborts the response (the client sees a broken
    /// transfer, never a silently truncated body).
    Channel(mpsc::Receiver<Result<Bytes, BoxError>>),
    /// A stored body decoded as the client reads it (a client that does not accept the
    /// coding it is stored in).
    Decode(Box<Decoder>),
    /// A body that cannot be sent: the transfer breaks at once (never a wrong body).
    Broken,
    /// A client's body that slate began to read and then passed on: what was read, then
    /// the rest as it comes.
    Resumed(Box<(std::collections::VecDeque<Bytes>, Incoming)>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ProxyBody::Incoming(i) => Pin::new(i).poll_frame(cx).map_err(Into::into),
            ProxyBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            ProxyBody::Decode(d) => Poll::Ready(
                d.next_chunk()
                    .map(|r| r.map(Frame::data).map_err(Into::into)),
            ),
            ProxyBody::Broken => Poll::Ready(Some(Err("the stored body does not decode".into()))),
            ProxyBody::Resumed(r) => match r.0.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(&mut r.1).poll_frame(cx).map_err(Into::into),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            ProxyBody::Incoming(i) => i.is_end_stream(),
            ProxyBody::Channel(_) | ProxyBody::Broken => false,
            ProxyBody::Decode(d) => d.remaining() == 0,
            ProxyBody::Resumed(r) => r.0.is_empty() && r.1.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Incoming(i) => i.size_hint(),
            ProxyBody::Channel(_) | ProxyBody::Broken => SizeHint::default(),
            ProxyBody::Decode(d) => SizeHint::with_exact(d.remaining()),
            ProxyBody::Resumed(r) => {
                let n: u64 = r.0.iter().map(|b| b.len() as u64).sum();
                let h = r.1.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower().saturating_add(n));
                if let Some(u) = h.upper() {
                    out.set_upper(u.saturating_add(n));
                }
                out
            }
        }
    }
}

/// Why a body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Broken(String),
    #[error("body shorter than its Content-Length")]
    Short,
}

/// A body read in full, or the part read before it proved too large to buffer.
#[derive(Debug)]
pub(crate) enum Read<B> {
    Whole(Bytes),
    TooLarge(Vec<Bytes>, B),
}

/// Reads `body` whole if it fits in `limit` bytes; a body longer than it said is cut off
/// at the limit, one shorter than its `declared` length is an error (a torn transfer must
/// never be stored).
pub(crate) async fn read_limited<B>(
    mut body: B,
    limit: u64,
    declared: Option<u64>,
) -> Result<Read<B>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Ok(Read::TooLarge(Vec::new(), body));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(16 << 10).min(limit) as usize);
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                chunks.push(buf.freeze());
                chunks.push(data);
                return Ok(Read::TooLarge(chunks, body));
            }
            buf.extend_from_slice(&data);
        }
    }
    if declared.is_some_and(|n| n != buf.len() as u64) {
        return Err(ReadError::Short);
    }
    // A body read without a declared length grew by doubling: held in the store, the slack
    // would be memory its bound never sees (see `coding::held`).
    let whole = if has_slack(buf.len(), buf.capacity()) {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    };
    Ok(Read::Whole(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives in `chunks`, then perhaps breaks off.
    fn body(chunks: &[&'static str], broken: bool) -> ProxyBody {
        let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(chunks.len() + 1);
        for c in chunks {
            tx.try_send(Ok(Bytes::from_static(c.as_bytes()))).unwrap();
        }
        if broken {
            tx.try_send(Err("connection reset".into())).unwrap();
        }
        ProxyBody::Channel(rx)
    }

    async fn read(chunks: &[&'static str], limit: u64, declared: Option<u64>) -> Read<ProxyBody> {
        read_limited(body(chunks, false), limit, declared)
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let Read::Whole(b) = read(&["ab", "cd"], 4, Some(4)).await else {
            panic!("whole")
        };
        assert_eq!(b, "abcd");
        assert!(matches!(read(&["ab", "cd"], 4, None).await, Read::Whole(_)));
    }

    #[tokio::test]
    async fn a_body_of_no_declared_length_is_held_in_its_own_size() {
        // 40 KB in 1 KB chunks: the buffer grows from 16 KiB by doubling, to 64 KiB.
        let chunk: &'static str = Box::leak("r".repeat(1000).into_boxed_str());
        let Read::Whole(b) = read(&[chunk; 40], 1 << 20, None).await else {
            panic!("whole")
        };
        assert_eq!(b.len(), 40_000);
        let Ok(held) = b.try_into_mut() else {
            panic!("a fresh body is not shared")
        };
        assert!(
            held.capacity() <= 40_000 + 40_000 / 16,
            "{}",
            held.capacity()
        );
    }

    #[tokio::test]
    async fn a_body_past_the_limit_keeps_what_was_read() {
        let Read::TooLarge(got, _) = read(&["ab", "cd", "e"], 3, None).await else {
            panic!("too large")
        };
        assert_eq!(got.concat(), b"abcd", "nothing read is lost");
        // Said too large up front: nothing is read at all.
        let Read::TooLarge(got, _) = read(&["ab"], 3, Some(10)).await else {
            panic!("too large")
        };
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_short_or_broken_body_is_an_error() {
        let short = read_limited(body(&["ab"], false), 10, Some(3)).await;
        assert!(matches!(short, Err(ReadError::Short)));
        let broken = read_limited(body(&["ab"], true), 10, None).await;
        assert!(matches!(broken, Err(ReadError::Broken(_))));
    }
}
