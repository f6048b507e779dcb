//! End-to-end tests: a real `holdfast serve` on loopback, real sockets.

mod support;

mod admin_flood;
mod auth;
mod bad_input;
mod cleanup;
mod client;
mod client_transports;
mod cluster;
mod cluster_jetstream;
mod config_env;
mod drain;
mod ending;
mod fault_proxy;
mod faults;
mod history;
mod hostile;
mod memory;
mod metrics;
mod push;
mod reads;
mod reconnect_jitter;
mod requests;
mod ring_set;
mod scale;
mod session;
mod slow_consumer;
mod systemd;
mod timeouts;
mod tls;
mod tune;
mod ws;
