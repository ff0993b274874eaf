//! Runnel's stream processor core: event-time windows, watermarks, anomaly rules and
//! checkpointed state, as sans-io state machines.
//!
//! Data flow of one [`pipeline::Pipeline`] step:
//!
//! ```text
//! InputRecord ─► parse::Parser ─┬─► DLQ record (reason header)
//!                               └─► SensorReading ─► watermark::WatermarkTracker
//!                                        │                   │ Message::Watermark
//!                                        ├─► window::WindowOperator ─► aggregates / late
//!                                        └─► rules::RuleEngine ─────► alerts
//!   every output ─► exactly_once::OutputSequencer (per-stream seq) ─► OutputRecord
//! ```
//!
//! Time is an input: the driver passes processing time with every step, and nothing here
//! reads a clock, spawns, or does I/O except through a [`state::StateStore`]. No async
//! runtime is involved. See `EXACTLY-ONCE.md` for the recovery design.

pub mod codec;
pub mod config;
pub mod driver;
pub mod exactly_once;
pub mod message;
pub mod num;
pub mod parse;
pub mod pipeline;
pub mod proto;
pub mod record;
pub mod rules;
pub mod sketch;
pub mod state;
pub mod time;
pub mod watermark;
pub mod window;

pub use config::PipelineConfig;
pub use pipeline::{Pipeline, PipelineError, Step};
pub use record::{InputRecord, OutputRecord, StreamId};
