//! A deadline on reading request bodies. actix-web times out the request head only; a body
//! sent one byte a second would hold its connection (and a worker's attention) forever.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use actix_web::{
    HttpMessage as _,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::header,
    middleware::Next,
    web::{self, Bytes},
};
use futures_util::Stream;

use super::errors::AppError;
use crate::config::Settings;

/// The body of a request, cut off with an error once `deadline` passes.
struct Deadline {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body read timed out",
            )))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Gives reading the body `body_read_timeout_secs` from the moment the head has arrived;
/// past that the extractor fails and the answer is 408, with the connection closed.
pub async fn time_out_slow_bodies(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // A request without Content-Length or Transfer-Encoding has no body (HTTP/1.1): most
    // requests, every GET of a page, pay nothing here.
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let timeout = req
        .app_data::<web::Data<Settings>>()
        .map(|s| s.body_read_timeout)
        .filter(|_| has_body);
    let expired = Arc::new(AtomicBool::new(false));
    if let Some(timeout) = timeout {
        let body = Deadline {
            inner: req.take_payload(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: Arc::clone(&expired),
        };
        let body: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(body);
        req.set_payload(Payload::from(body));
    }
    let res = next.call(req).await;
    if expired.load(Ordering::Relaxed) {
        // The request span names method and path.
        tracing::warn!("a request body did not arrive in time");
        return Err(AppError::RequestTimeout.into());
    }
    res
}
