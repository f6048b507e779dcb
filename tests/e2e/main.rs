//! End-to-end tests: a real `holdfast serve` on loopback, real sockets.

mod support;

mod auth;
mod bad_input;
mod cleanup;
mod cluster;
mod drain;
mod hostile;
mod metrics;
mod push;
mod reads;
mod requests;
mod scale;
mod session;
mod slow_consumer;
mod systemd;
mod timeouts;
mod tls;
mod tune;
mod ws;
