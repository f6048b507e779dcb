//! Baseline: a tokio task-per-connection echo server (multi-thread runtime, one worker thread per
//! core), SO_REUSEPORT listener. Echoes Holdfast frames byte-exact; answers Hello with Welcome and Ping with Pong.
//! `holdfast-baseline-tokio --listen 127.0.0.1:7879 --cores 1`

use holdfast_bench::echo_server::{baseline_args, reuseport_listener, serve_frames};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::io::Result<()> {
    let (listen, cores) = baseline_args("holdfast-baseline-tokio");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(reuseport_listener(listen)?)?;
        eprintln!("holdfast-baseline-tokio listening on {listen} with {cores} worker threads");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_frames(stream));
        }
    })
}
