//! Interim (1xx) responses from the origin, passed on to an HTTP/1.1 client before the
//! final response (RFC 9110 §15.2, RFC 8297 `103 Early Hints`).
//!
//! hyper's server answers a request with one response and refuses to write a 1xx one, so
//! slate writes them itself: every client connection's socket is wrapped in
//! [`InterimIo`], and each HTTP/1.1 request carries an [`Interim`] handle to it (a request
//! extension). A fill started by that request registers a callback on its upstream request
//! (`hyper::ext::on_informational`) that hands each 102/103 to the handle; the wrapper
//! writes the bytes at the next chance it gets on the connection task: when hyper polls the
//! socket for reading (which it does while the request is in flight, to see the client
//! hang up) or before hyper's own next write, whichever comes first. While a request is in
//! flight hyper writes nothing on an HTTP/1.1 connection, so the interim bytes cannot land
//! inside another response.
//!
//! Only the request that started the fill gets them: a request waiting on another's fill,
//! or answered from the store, gets the final response alone, as from any cache. Interim
//! responses are never stored, and their fields never reach the stored response: they
//! arrive on a callback, not in the response slate stores.

use futures_util::task::AtomicWaker;
use http::{HeaderMap, StatusCode};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection and its requests share: bytes to write before hyper's next ones.
#[derive(Default)]
struct Shared {
    /// Set when `pending` holds bytes: the hot path looks at it and at nothing else.
    waiting: AtomicBool,
    pending: Mutex<Pending>,
    /// The connection task, woken to write what was handed in.
    task: AtomicWaker,
    /// The connection is gone: interim responses for it are dropped.
    closed: AtomicBool,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    written: usize,
}

/// A handle to one client connection, for the requests on it.
#[derive(Clone)]
pub struct Interim(Arc<Shared>);

impl Interim {
    /// Hands an interim response to the connection. 100 (hyper answers `Expect` itself)
    /// and 101 (an upgrade is a final answer to its connection) are not passed on.
    pub fn send(&self, status: StatusCode, headers: &HeaderMap) {
        let code = status.as_u16();
        if !(102..200).contains(&code) || self.0.closed.load(Ordering::Acquire) {
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {code} {}\r\n",
            status.canonical_reason().unwrap_or("Informational")
        )
        .into_bytes();
        let mut forwarded = headers.clone();
        crate::upstream::strip_hop_by_hop(&mut forwarded);
        for (name, value) in forwarded.iter() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        if let Ok(mut p) = self.0.pending.lock() {
            p.bytes.extend_from_slice(&head);
            self.0.waiting.store(true, Ordering::Release);
        }
        self.0.task.wake();
    }
}

/// Passes the interim responses the upstream sends to `req` on to `to`.
pub fn forward<B>(req: &mut http::Request<B>, to: Interim) {
    hyper::ext::on_informational(req, move |r| to.send(r.status(), r.headers()));
}

/// A client connection's socket, which can write interim responses between hyper's writes.
pub struct InterimIo<T> {
    inner: T,
    shared: Arc<Shared>,
}

impl<T> InterimIo<T> {
    pub fn new(inner: T) -> (InterimIo<T>, Interim) {
        let shared = Arc::new(Shared::default());
        let handle = Interim(shared.clone());
        (InterimIo { inner, shared }, handle)
    }
}

impl<T> Drop for InterimIo<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

impl<T: AsyncWrite + Unpin> InterimIo<T> {
    /// Writes what is pending; `Ready` once nothing is. A failed write drops the interim
    /// bytes: hyper's own write sees the broken connection next.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.shared.waiting.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let Ok(mut p) = self.shared.pending.lock() else {
            return Poll::Ready(());
        };
        while p.written < p.bytes.len() {
            let from = p.written;
            match Pin::new(&mut self.inner).poll_write(cx, &p.bytes[from..]) {
                Poll::Ready(Ok(n)) if n > 0 => p.written += n,
                Poll::Ready(_) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        p.bytes.clear();
        p.written = 0;
        self.shared.waiting.store(false, Ordering::Release);
        Poll::Ready(())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for InterimIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        // Not ready to write them yet is no reason not to read: they wait for the next poll.
        let _ = this.poll_pending(cx);
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for InterimIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        futures_util::ready!(this.poll_pending(cx));
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        futures_util::ready!(this.poll_pending(cx));
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures_util::ready!(this.poll_pending(cx));
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn interim_bytes_go_before_the_next_write() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (mut io, handle) = InterimIo::new(a);
        let mut h = HeaderMap::new();
        h.insert("link", "</a.css>; rel=preload".parse().unwrap());
        h.insert("connection", "close".parse().unwrap());
        handle.send(StatusCode::from_u16(103).unwrap(), &h);
        handle.send(StatusCode::CONTINUE, &HeaderMap::new());
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(io);
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
        );
        // The connection is gone: nothing is kept for it.
        handle.send(StatusCode::from_u16(103).unwrap(), &h);
        assert!(handle.0.pending.lock().unwrap().bytes.is_empty());
    }
}
