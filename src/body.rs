//! The one body type slate sends, both to clients and to the upstream.
//!
//! An enum rather than a boxed trait object: a hit is `Full` (a refcounted `Bytes` shared
//! with the stored entry, never copied), a pass-through streams hyper's `Incoming`, and an
//! oversize fill streams through a channel fed by the fill task.

use crate::coding::Decoder;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            ProxyBody::Incoming(i) => i.is_end_stream(),
            ProxyBody::Channel(_) | ProxyBody::Broken => false,
            ProxyBody::Decode(d) => d.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Incoming(i) => i.size_hint(),
            ProxyBody::Channel(_) | ProxyBody::Broken => SizeHint::default(),
            ProxyBody::Decode(d) => SizeHint::with_exact(d.remaining()),
        }
    }
}
