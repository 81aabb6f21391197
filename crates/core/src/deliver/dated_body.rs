//! A request body that reports its departure: the connection's first read of it comes
//! just before the bytes are written, and that is when the API will count the request
//! (see [`crate::limit::departure`]). Same bytes, same `Content-Length`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::limit::departure::Departure;

/// `bytes`, reporting `departure` when first read.
#[derive(Debug)]
pub(super) struct DatedBody {
    bytes: Option<Bytes>,
    len: u64,
    departure: Option<Departure>,
}

impl DatedBody {
    pub(super) fn new(bytes: Bytes, departure: Option<Departure>) -> Self {
        DatedBody {
            len: bytes.len() as u64,
            bytes: Some(bytes),
            departure,
        }
    }
}

impl Body for DatedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(d) = this.departure.take() {
            d.now();
        }
        Poll::Ready(this.bytes.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |_| self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::limit::departure::SendLog;
    use crate::limit::pacer::Ticket;

    #[derive(Debug, Default)]
    struct Log(Mutex<Vec<Ticket>>);

    impl SendLog for Log {
        fn departed(&self, ticket: Ticket, _due: tokio::time::Instant, _at: tokio::time::Instant) {
            self.0.lock().unwrap().push(ticket);
        }
    }

    async fn frame(body: &mut DatedBody) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|f| f.unwrap().into_data().unwrap())
    }

    #[tokio::test]
    async fn the_first_read_reports_the_departure_and_yields_the_bytes_whole() {
        let log = Arc::new(Log::default());
        let departure = Departure::new(log.clone(), 7, tokio::time::Instant::now());
        let mut body = DatedBody::new(
            Bytes::from_static(b"{\"batch\":[]}"),
            Some(departure.clone()),
        );
        assert_eq!(body.size_hint().exact(), Some(12), "Content-Length kept");
        assert!(log.0.lock().unwrap().is_empty(), "not before the read");
        assert_eq!(
            frame(&mut body).await.as_deref(),
            Some(&b"{\"batch\":[]}"[..])
        );
        assert!(body.is_end_stream());
        assert_eq!(frame(&mut body).await, None);
        // The permit's drop reports again: only the first report counts.
        departure.now();
        assert_eq!(*log.0.lock().unwrap(), vec![7]);
    }
}
