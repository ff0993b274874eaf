//! Focused tests of the Raft core on a tiny hand-driven cluster.
