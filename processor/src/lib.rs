//! Stream processor: event-time windows, watermarks and alerts (issue 5; not built yet).
