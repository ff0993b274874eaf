//! Runnel benches harness (see README).
