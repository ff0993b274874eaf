//! Runnel tests harness (see README).
