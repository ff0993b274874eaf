//! Segment-file implementation of [`super::PartitionLog`] (being written).
