//! Encoding samples into a remote-write request body (being written).
