//! The concurrency protocols on the broker's hot path, as small runtime-agnostic cores that the
//! broker uses as they are and loom model-checks (`RUSTFLAGS="--cfg loom" cargo test -p
//! runnel-sync --release`).
//!
//! - [`Watermarked`]: a partition's log behind a read-write lock and the high watermark
//!   published over it. A reader that sees high watermark `h` can read every offset below `h`
//!   and is served nothing at or above it; the high watermark never moves back; a reader never
//!   sees a batch half appended or half truncated.
//! - [`GroupCommit`]: the flushed (fsynced) offset and the acks=all waiters on it. A waiter is
//!   answered exactly once: `Ok` only once a sync covering its end offset completed (and was
//!   not planned before a truncation), an error once the storage failed; never lost.
//!
//! Async waiting stays outside (the broker answers a `tokio::sync::oneshot` per waiter and
//! wakes its flusher through `FlushSignal`); what is decided, and under which lock, is here.

mod group_commit;
mod sync;
mod watermark;

#[cfg(all(test, loom))]
mod loom_tests;

pub use group_commit::{Answers, GroupCommit, StorageFailed, SyncTicket, Waiter};
pub use watermark::Watermarked;

/// Read and write guards on a [`Watermarked`] state (std's outside loom).
pub use sync::{RwLockReadGuard, RwLockWriteGuard};
