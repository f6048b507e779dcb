//! Baseline: tokio + tokio-tungstenite, a task per connection (multi-thread runtime, one worker
//! thread per core), SO_REUSEPORT listener. HTTP Upgrade with subprotocol `holdfast.v1` on any
//! path; each binary message carries Holdfast frames, answered as the tokio baseline does (echo
//! byte-exact, Welcome for Hello, Pong for Ping), all replies to one message in one binary
//! message. With `--cert` and `--key` it is wss: tokio-rustls (ring, ALPN http/1.1) underneath.
//! `holdfast-baseline-tokio-tungstenite --listen 127.0.0.1:7879 --cores 1 [--cert PEM --key PEM]`

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use holdfast_bench::echo_server::{
    answer_frames, baseline_tls_args, next_session_id, serve_tokio, tokio_tls_acceptor,
    BASELINE_READ_BYTES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "holdfast-baseline-tokio-tungstenite";
const SUBPROTOCOL: &str = "holdfast.v1";
/// tokio-tungstenite's read buffer per connection (the bench client's, not the 128 KiB default).
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

fn main() -> std::io::Result<()> {
    let args = baseline_tls_args(NAME);
    let acceptor = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(tokio_tls_acceptor(cert, key, b"http/1.1")?),
        (None, None) => None,
        _ => {
            eprintln!("{NAME}: --cert and --key go together");
            std::process::exit(2);
        }
    };
    let scheme = if acceptor.is_some() { "wss" } else { "ws" };
    let label = format!("{NAME} ({scheme})");
    serve_tokio(&label, args.listen, args.cores, move |stream| {
        let acceptor = acceptor.clone();
        async move {
            match acceptor {
                None => serve(stream).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve(stream).await;
                    }
                }
            }
        }
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    // The Err type (an HTTP error response) is tungstenite's Callback signature, not ours.
    #[allow(clippy::result_large_err)]
    let choose_subprotocol = |_request: &Request, mut response: Response| {
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    };
    let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER_BYTES);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, choose_subprotocol, Some(config))
            .await
    else {
        return;
    };
    let session_id = next_session_id();
    let mut input = BytesMut::with_capacity(BASELINE_READ_BYTES);
    let mut out = BytesMut::with_capacity(BASELINE_READ_BYTES);
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Binary(bytes)) => input.extend_from_slice(&bytes),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Text(_) | Message::Close(_)) | Err(_) => return,
        }
        let Ok(consumed) = answer_frames(&input, &mut out, session_id) else {
            return;
        };
        let _ = input.split_to(consumed);
        if !out.is_empty() {
            let reply = Message::Binary(out.split().freeze());
            if ws.send(reply).await.is_err() {
                return;
            }
        }
    }
}
