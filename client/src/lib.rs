//! Async Rust client for the gRPC API (issue 4; not built yet).
