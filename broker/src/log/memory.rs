//! In-memory implementation of [`super::PartitionLog`] (being written).
