//! In-band stream messages and the operator contract.
//!
//! Data and control travel in one ordered stream, as in arroyo's `SignalMessage`: an operator
//! sees a watermark or a checkpoint barrier exactly between the data items that precede and
//! follow it, so "everything before the barrier" is well defined without any runtime. Operators
//! are plain synchronous state machines driven by `process`; tests push messages in and read a
//! [`Collector`] out.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Identifies one checkpoint; strictly increasing within a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

/// One item of an operator's input or output stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<T> {
    /// A data item.
    Data(T),
    /// No more data with event time below this is expected (except late data).
    Watermark(Millis),
    /// Everything before this message belongs to checkpoint `id`; operators snapshot state here.
    CheckpointBarrier(CheckpointId),
    /// The input is finished (bounded runs and tests): flush everything still open.
    End,
}

/// Receives an operator's output messages in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Collector<T> {
    items: Vec<Message<T>>,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

impl<T> Collector<T> {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits any message.
    pub fn emit(&mut self, msg: Message<T>) {
        self.items.push(msg);
    }

    /// Emits a data item.
    pub fn data(&mut self, item: T) {
        self.items.push(Message::Data(item));
    }

    /// Takes everything emitted so far.
    pub fn drain(&mut self) -> Vec<Message<T>> {
        std::mem::take(&mut self.items)
    }

    /// Takes only the data items emitted so far, dropping control messages.
    pub fn drain_data(&mut self) -> Vec<T> {
        self.drain()
            .into_iter()
            .filter_map(|m| match m {
                Message::Data(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// Removes every item and yields the data, keeping the buffer's capacity: a collector
    /// reused across calls allocates only when it grows.
    pub fn drain_data_iter(&mut self) -> impl Iterator<Item = T> + '_ {
        self.items.drain(..).filter_map(|m| match m {
            Message::Data(d) => Some(d),
            _ => None,
        })
    }

    /// Messages emitted so far.
    pub fn items(&self) -> &[Message<T>] {
        &self.items
    }
}

/// A synchronous stream operator. Control messages must be forwarded downstream (after any
/// output they cause), so a chain of operators preserves the data/control interleaving.
pub trait Operator {
    /// Input data type.
    type In;
    /// Output data type.
    type Out;

    /// Handles one message, emitting zero or more messages into `out`.
    fn process(&mut self, msg: Message<Self::In>, out: &mut Collector<Self::Out>);
}

/// Runs `msgs` through `op` and returns everything it emitted: the synchronous test harness.
pub fn run_operator<O: Operator>(
    op: &mut O,
    msgs: impl IntoIterator<Item = Message<O::In>>,
) -> Vec<Message<O::Out>> {
    let mut out = Collector::new();
    for m in msgs {
        op.process(m, &mut out);
    }
    out.drain()
}
