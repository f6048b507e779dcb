//! Baseline: a tokio task-per-connection echo server (multi-thread runtime, one worker thread per
//! core), SO_REUSEPORT listener. Echoes Holdfast frames byte-exact; answers Hello with Welcome and Ping with Pong.
//! `holdfast-baseline-tokio --listen 127.0.0.1:7879 --cores 1`

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use holdfast_bench::echo_server::{
    answer_frames, baseline_args, reuseport_listener, BASELINE_READ_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

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
            tokio::spawn(serve(stream));
        }
    })
}

async fn serve(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let session_id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    let mut input = BytesMut::with_capacity(BASELINE_READ_BYTES);
    let mut out = BytesMut::with_capacity(BASELINE_READ_BYTES);
    loop {
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(consumed) = answer_frames(&input, &mut out, session_id) else {
            return;
        };
        let _ = input.split_to(consumed);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if input.capacity() - input.len() < 1024 {
            input.reserve(BASELINE_READ_BYTES);
        }
    }
}
