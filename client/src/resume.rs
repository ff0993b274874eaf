//! The reconnect loop shared by the client's resumable server streams ([`crate::Subscriber`],
//! [`crate::AlertWatcher`]): hand out buffered items, read the next message, and when the
//! stream breaks, open it again from the stream's own resume position after a doubling
//! backoff — until a refusal that retrying cannot fix, or too many failures in a row.
//!
//! A stream that broke after it opened moves the next open to the client's next endpoint
//! ([`Resumable::moved_on`]); opening itself tries every endpoint in turn
//! (`crate::endpoints`), so a reader made from a cluster's endpoints carries on from its
//! position on another node when its own dies.

use std::time::Duration;

use tonic::{Code, Status, Streaming};

use crate::ClientError;

/// The first wait before a reconnect; it doubles up to the stream's `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Failures worth a reconnect: the transport or the broker going away (or what the stream
/// reads not existing yet), not a refusal.
pub(crate) fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted | Code::Internal
    )
}

/// A server stream that can be opened again exactly where the caller left off.
pub(crate) trait Resumable {
    /// One message of the stream.
    type Message;
    /// What `next` hands out.
    type Item;

    /// The open stream, if any.
    fn stream(&mut self) -> &mut Option<Streaming<Self::Message>>;
    /// Open the stream from the resume position (dropping anything buffered past it).
    async fn open(&mut self) -> Result<Streaming<Self::Message>, Status>;
    /// The next buffered item, advancing the resume position past it.
    fn pop(&mut self) -> Option<Self::Item>;
    /// Take in one message: buffer its items, remember where it ends.
    fn absorb(&mut self, message: Self::Message);
    /// Consecutive failed reconnects allowed, and the longest wait between them.
    fn policy(&self) -> (u32, Duration);
    /// Log a dropped stream that will be resumed after `backoff`.
    fn log_drop(&self, status: &Status, backoff: Duration);
    /// The open stream broke: the next open starts at the next endpoint.
    fn moved_on(&mut self);
}

/// The next item of `r`, reconnecting as its module docs say. A stream the server ends
/// (e.g. shutting down) counts as `ended`, a retryable failure.
pub(crate) async fn next<R: Resumable>(r: &mut R, ended: &str) -> Result<R::Item, ClientError> {
    let mut failures = 0u32;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(item) = r.pop() {
            return Ok(item);
        }
        let (outcome, was_open) = match r.stream().as_mut() {
            Some(s) => (s.message().await, true),
            None => match r.open().await {
                Ok(s) => {
                    *r.stream() = Some(s);
                    continue;
                }
                Err(e) => (Err(e), false),
            },
        };
        let status = match outcome {
            Ok(Some(message)) => {
                failures = 0;
                backoff = FIRST_BACKOFF;
                r.absorb(message);
                continue;
            }
            Ok(None) => Status::unavailable(ended.to_owned()),
            Err(s) => s,
        };
        *r.stream() = None;
        if was_open {
            r.moved_on();
        }
        let (max_reconnects, max_backoff) = r.policy();
        if !retryable(&status) || failures >= max_reconnects {
            return Err(ClientError::Status(status));
        }
        failures += 1;
        r.log_drop(&status, backoff);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}
