//! Errors slate answers itself, mapped to HTTP in one place.

use crate::body::ProxyBody;
use crate::phase::{CacheStatus, Detail, Fwd, Phase};
use crate::upstream::UpstreamError;
use http::{header, HeaderValue, Response, StatusCode};

/// Everything that ends a request with an answer of slate's own.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("request URL is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the store is unavailable: {0}")]
    Store(String),
    #[error("not in the cache, and the request said only-if-cached")]
    NotCached,
    #[error("too many fills in flight; try again shortly")]
    Overloaded,
    #[error("the back end is busy with other reports; try again in {0} s")]
    QueueFull(u64),
}

impl From<crate::key::KeyError> for ProxyError {
    fn from(e: crate::key::KeyError) -> Self {
        ProxyError::BadRequest(e.to_string())
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded | ProxyError::QueueFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the connection must close after this answer: after a malformed request,
    /// the connection's framing cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ProxyError::BadRequest(_))
    }

    /// The answer: the status and a short JSON body `{"error": ..., "status": ...}`.
    pub fn response(&self) -> Response<ProxyBody> {
        let mut r = json_response(
            self.status(),
            &serde_json::json!({ "error": self.to_string(), "status": self.status().as_u16() }),
        );
        if let ProxyError::QueueFull(secs) = self {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        r
    }

    /// The `Cache-Status` of such an answer.
    pub fn cache_status(&self) -> CacheStatus {
        let s = CacheStatus::new(Phase::Error);
        match self {
            ProxyError::Upstream(UpstreamError::Timeout(_)) => s.detail(Detail::UpstreamTimeout),
            ProxyError::Upstream(UpstreamError::Unreachable(_)) => {
                s.detail(Detail::UpstreamUnreachable)
            }
            ProxyError::Upstream(UpstreamError::Broken(_)) => s.detail(Detail::UpstreamBroken),
            ProxyError::NotCached => s.detail(Detail::OnlyIfCached),
            // It was a miss that would have gone upstream (RFC 9211 `fwd`).
            ProxyError::QueueFull(_) => {
                CacheStatus::fwd(Phase::Error, Fwd::UriMiss).detail(Detail::QueueFull)
            }
            _ => s,
        }
    }
}

/// A JSON answer with the right content type.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    let mut body = v.to_string();
    body.push('\n');
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An error and its causes on one line (`client error (Connect): tcp connect error: ...`):
/// hyper's errors say little until their sources are read.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
