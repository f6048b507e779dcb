//! Baseline: a tokio task-per-connection echo server (multi-thread runtime, one worker thread per
//! core), SO_REUSEPORT listener. Echoes Holdfast frames byte-exact; answers Hello with Welcome and Ping with Pong.
//! `holdfast-baseline-tokio --listen 127.0.0.1:7879 --cores 1`

use holdfast_bench::echo_server::{baseline_args, serve_frames, serve_tokio};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::io::Result<()> {
    let (listen, cores) = baseline_args("holdfast-baseline-tokio");
    serve_tokio("holdfast-baseline-tokio", listen, cores, serve_frames)
}
