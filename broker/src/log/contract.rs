//! Contract suite every [`super::PartitionLog`] implementation passes (being written).
