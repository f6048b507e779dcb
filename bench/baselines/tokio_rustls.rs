//! Baseline: tokio + tokio-rustls, a task per connection (multi-thread runtime, one worker thread
//! per core), SO_REUSEPORT listener, TLS 1.3/1.2 with the ring provider and ALPN `holdfast/1`
//! (the same rustls as Holdfast's TLS listener). Inside TLS it speaks the same frames as the tokio
//! baseline: echoes byte-exact, answers Hello with Welcome and Ping with Pong.
//! `holdfast-baseline-tokio-rustls --listen 127.0.0.1:7879 --cores 1 --cert cert.pem --key key.pem`

use holdfast_bench::echo_server::{
    baseline_tls_args, reuseport_listener, serve_frames, tokio_tls_acceptor,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.cores)
        .enable_io()
        .build()?;
    let listen = args.listen;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(reuseport_listener(listen)?)?;
        eprintln!(
            "{NAME} listening on {listen} with {} worker threads",
            args.cores
        );
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(acceptor.clone(), stream));
        }
    })
}

async fn serve(acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    if let Ok(stream) = acceptor.accept(stream).await {
        serve_frames(stream).await;
    }
}
