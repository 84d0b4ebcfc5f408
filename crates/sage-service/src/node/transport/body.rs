//! A request body that must arrive by a deadline.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::activity::Activity;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request's body, which fails with [`BodyTimedOut`] when it is not
/// all there by the deadline (the end of the headers plus
/// `body_read_timeout`). The timer only starts when the body is not
/// already buffered.
pub(super) struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    timed_out: bool,
}

impl DeadlineBody {
    pub(super) fn new(
        inner: Incoming,
        deadline: Instant,
        limit: Duration,
        activity: Arc<Activity>,
    ) -> Self {
        DeadlineBody {
            inner,
            deadline,
            limit,
            sleep: None,
            activity,
            timed_out: false,
        }
    }
}

/// The error a late body reads as; handlers show its text.
#[derive(Debug)]
pub(super) struct BodyTimedOut(Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s (body_read_timeout)",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timed_out = true;
        this.activity.body_timed_out();
        tracing::debug!(
            limit_secs = this.limit.as_secs_f64(),
            "request body not received within body_read_timeout"
        );
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
