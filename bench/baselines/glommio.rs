//! Baseline: a glommio task-per-connection echo server: one LocalExecutor per core, pinned, each
//! with its own SO_REUSEPORT listener (glommio's default), io_memory 1 MiB (memlock is 8 MiB per
//! user on the development host, docs/CAPACITY.md "Platform facts"). Echoes Holdfast frames byte-exact; answers Hello with Welcome and
//! Ping with Pong. `holdfast-baseline-glommio --listen 127.0.0.1:7879 --cores 1`

use std::cell::Cell;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use holdfast_bench::echo_server::{answer_frames, baseline_args, BASELINE_READ_BYTES};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// io_uring registered buffer memory per executor.
const IO_MEMORY_BYTES: usize = 1 << 20;

fn main() {
    let (listen, cores) = baseline_args("holdfast-baseline-glommio");
    let executors: Vec<_> = (0..cores)
        .map(|core| {
            LocalExecutorBuilder::new(Placement::Fixed(core))
                .name(&format!("echo-{core}"))
                .io_memory(IO_MEMORY_BYTES)
                .spawn(move || async move {
                    let listener = TcpListener::bind(listen).expect("bind (SO_REUSEPORT)");
                    eprintln!("holdfast-baseline-glommio executor {core} listening on {listen}");
                    let next_id = Rc::new(Cell::new((core as u64) << 48 | 1));
                    loop {
                        let Ok(stream) = listener.accept().await else {
                            continue;
                        };
                        let session_id = next_id.get();
                        next_id.set(session_id + 1);
                        glommio::spawn_local(serve(stream, session_id)).detach();
                    }
                })
                .expect("start executor")
        })
        .collect();
    for executor in executors {
        let _ = executor.join();
    }
}

async fn serve(mut stream: TcpStream, session_id: u64) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BASELINE_READ_BYTES];
    let mut held = 0usize;
    let mut out = BytesMut::with_capacity(BASELINE_READ_BYTES);
    loop {
        let n = match stream.read(&mut buf[held..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        held += n;
        let Ok(consumed) = answer_frames(&buf[..held], &mut out, session_id) else {
            return;
        };
        buf.copy_within(consumed..held, 0);
        held -= consumed;
        if held == buf.len() {
            buf.resize(buf.len() * 2, 0); // a frame larger than the buffer (bounded by max frame)
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
