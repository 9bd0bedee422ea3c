//! Streaming body wrappers: the request body with a byte limit enforced while it
//! streams (so chunked uploads without `Content-Length` are limited too) and kept
//! replayable until an attempt reads it, and the
//! response body that keeps its instance's in-flight count until it is fully sent.
//! Imports no other module of the crate: the upstream layer builds on it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a request carries a body (hyper knows: Content-Length or chunked framing).
pub fn has_body(body: &axum::body::Body) -> bool {
    Body::size_hint(body).exact() != Some(0)
}

/// The request body went past the route's limit.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body too large")
    }
}

impl std::error::Error for BodyTooLarge {}

/// Whether `e` (or anything it wraps) is [`BodyTooLarge`].
pub fn is_body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTooLarge>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that can be sent again as long as no attempt has started reading it:
/// a connection refused before anything was written leaves it untouched, so the request
/// can go to another instance whatever its method. Nothing is buffered.
pub struct Replayable {
    /// `None`: the request has no body.
    slot: Option<Arc<Mutex<Option<axum::body::Body>>>>,
    limit: u64,
}

impl Replayable {
    pub fn new(body: axum::body::Body, limit: u64) -> Self {
        Self {
            slot: Some(Arc::new(Mutex::new(Some(body)))),
            limit,
        }
    }

    pub fn empty() -> Self {
        Self {
            slot: None,
            limit: 0,
        }
    }

    /// Whether no attempt has read from the body yet.
    pub fn untouched(&self) -> bool {
        self.slot.as_ref().is_none_or(|s| lock(s).is_some())
    }

    /// The body for one attempt, or `None` once an earlier attempt started reading it.
    pub fn attempt(&self) -> Option<ProxyBody> {
        match &self.slot {
            None => Some(ProxyBody::empty()),
            Some(slot) if lock(slot).is_some() => Some(ProxyBody {
                source: Source::Waiting(slot.clone()),
                remaining: self.limit,
            }),
            Some(_) => None,
        }
    }
}

fn lock(slot: &Mutex<Option<axum::body::Body>>) -> MutexGuard<'_, Option<axum::body::Body>> {
    // Nothing can panic while the lock is held; a poisoned lock still holds a valid body.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Source {
    Empty,
    /// Not read yet: still in the shared slot, where a retry can find it.
    Waiting(Arc<Mutex<Option<axum::body::Body>>>),
    Reading(axum::body::Body),
}

/// A request body on its way upstream, cut off with [`BodyTooLarge`] past `remaining` bytes.
pub struct ProxyBody {
    source: Source,
    remaining: u64,
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self {
            source: Source::Empty,
            remaining: 0,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Source::Waiting(slot) = &self.source {
            // The first read takes the body out: from now on it cannot be replayed.
            let taken = lock(slot).take();
            self.source = match taken {
                Some(b) => Source::Reading(b),
                None => Source::Empty,
            };
        }
        let Source::Reading(inner) = &mut self.source else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.source = Source::Empty;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Waiting(slot) => lock(slot).as_ref().is_none_or(|b| b.is_end_stream()),
            Source::Reading(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Empty => SizeHint::with_exact(0),
            Source::Waiting(slot) => lock(slot)
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_else(|| SizeHint::with_exact(0)),
            Source::Reading(b) => b.size_hint(),
        }
    }
}

/// An upstream response body that holds `G` (its instance's in-flight slot,
/// `upstream::InFlight`) until done.
pub struct GuardedBody<G> {
    inner: hyper::body::Incoming,
    _guard: G,
}

impl<G> GuardedBody<G> {
    pub fn new(inner: hyper::body::Incoming, guard: G) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Unpin> Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
