//! holdfast-bench: a load harness for Holdfast and its baselines.
//!
//! Map, top to bottom:
//! - [`cli`]: the command line (every limit a flag with its unit).
//! - [`coordinator`]: the parent of a run: splits sessions over worker processes, runs the
//!   phases on one monotonic clock, merges per-worker histograms, samples the server via [`procfs`].
//! - [`worker`]: one worker process: a single-threaded mio/epoll loop over a slab of sessions;
//!   [`schedule`] gives open-loop intended send times.
//! - [`msg`]: the plan, commands and reports exchanged between parent and workers.
//! - [`hist`]: HdrHistogram setup, merging, `.hgrm` writing and parsing; [`report`]: the summary.
//! - [`resume_storm`]: `storm --storm-mode goodbye --resume`: drain, restart and resume with
//!   holdfast-client sessions, every push accounted for; [`resume_worker`]: its worker
//!   processes, which hold the sessions and count what each received.
//! - [`push`]: the `push` workload's publisher (admin HTTP `POST /publish`) and delivery accounting.
//! - [`events`]: the `events` workload's Event frame, `/metrics` and per-thread CPU sampler, summary.
//! - [`plot`]: charts from `.hgrm` and interval logs; [`compare`]: Holdfast against the baselines.
//! - [`echo_server`]: frame logic of the baseline servers (bench/baselines/).
//! - [`transport`]: the client side of tcp, tls, ws and wss under a worker's sessions.
//!
//! The workers know nothing about the report; the parent never touches a session socket.

pub mod cli;
pub mod clock;
pub mod compare;
pub mod coordinator;
pub mod echo_server;
pub mod events;
pub mod hist;
pub mod msg;
pub mod plot;
pub mod procfs;
pub mod push;
pub mod report;
pub mod resume_storm;
pub mod resume_worker;
pub mod schedule;
pub mod sockets;
pub mod transport;
pub mod worker;
