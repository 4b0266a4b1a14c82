//! Retry decisions and backoff schedule (being written).
