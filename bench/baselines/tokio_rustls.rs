//! Baseline: tokio + tokio-rustls, a task per connection (multi-thread runtime, one worker thread
//! per core), SO_REUSEPORT listener, TLS 1.3/1.2 with the ring provider and ALPN `holdfast/1`
//! (the same rustls as Holdfast's TLS listener). Inside TLS it speaks the same frames as the tokio
//! baseline: echoes byte-exact, answers Hello with Welcome and Ping with Pong.
//! `holdfast-baseline-tokio-rustls --listen 127.0.0.1:7879 --cores 1 --cert cert.pem --key key.pem`

use holdfast_bench::echo_server::{
    baseline_tls_args, serve_frames, serve_tokio, tokio_tls_acceptor,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "holdfast-baseline-tokio-rustls";

fn main() -> std::io::Result<()> {
    let args = baseline_tls_args(NAME);
    let (Some(cert), Some(key)) = (args.cert, args.key) else {
        eprintln!("{NAME}: --cert PEM and --key PEM are required");
        std::process::exit(2);
    };
    let acceptor = tokio_tls_acceptor(&cert, &key, b"holdfast/1")?;
    serve_tokio(NAME, args.listen, args.cores, move |stream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(stream) = acceptor.accept(stream).await {
                serve_frames(stream).await;
            }
        }
    })
}
