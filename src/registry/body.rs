//! A request's body as the registry client sends it: in pieces, so the stall watchdog
//! ([`crate::network::stall`]) sees each one the connection takes.

use bytes::Bytes;

/// Bytes handed to the connection at a time: the stall watchdog sees progress when the
/// connection takes the next piece, so a whole 8 MiB part in one frame would be one step
/// of progress however slowly it went out.
const BODY_PIECE: usize = 256 << 10;

/// A request's body: whole, or streamed from a channel as it is produced (a layer's
/// upload while it is compressed, sent chunked, as `docker push` sends a layer; or a
/// spooled blob read from disk, with its length known). Either goes out in pieces of at
/// most [`BODY_PIECE`].
#[derive(Debug)]
pub struct RequestBody {
    /// What is at hand and not yet taken.
    rest: Bytes,
    /// Where more comes from, until it ends.
    more: Option<tokio::sync::mpsc::Receiver<Bytes>>,
    /// Bytes still to send, when known.
    remaining: Option<u64>,
}

impl RequestBody {
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            remaining: Some(bytes.len() as u64),
            rest: bytes,
            more: None,
        }
    }

    /// The chunks `more` gives, `length` in all when known (else sent chunked).
    pub fn streamed(more: tokio::sync::mpsc::Receiver<Bytes>, length: Option<u64>) -> Self {
        Self {
            rest: Bytes::new(),
            more: Some(more),
            remaining: length,
        }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if !this.rest.is_empty() {
                let piece = this.rest.split_to(this.rest.len().min(BODY_PIECE));
                if let Some(remaining) = &mut this.remaining {
                    *remaining = remaining.saturating_sub(piece.len() as u64);
                }
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))));
            }
            let Some(more) = &mut this.more else {
                return Poll::Ready(None);
            };
            match more.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => this.rest = chunk,
                Poll::Ready(None) => {
                    this.more = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.more.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.remaining.map_or_else(
            hyper::body::SizeHint::default,
            hyper::body::SizeHint::with_exact,
        )
    }
}
