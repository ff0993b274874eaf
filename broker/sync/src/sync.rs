//! The primitives the cores synchronise with: std's, or loom's under `cfg(loom)` so that loom
//! can explore every interleaving of the real code (the shim pattern of tokio's `loom` module).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock};
#[cfg(loom)]
pub use loom::sync::{RwLockReadGuard, RwLockWriteGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock};
#[cfg(not(loom))]
pub use std::sync::{RwLockReadGuard, RwLockWriteGuard};
