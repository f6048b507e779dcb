//! Transports between the ring and the frame decoder.

pub mod tls;
