//! The frame logic both baseline servers share: echo every frame byte-exact, except an anonymous
//! (or any) Hello, answered with a Welcome, and Ping, answered with Pong, so one client (with or
//! without `--raw`) drives Holdfast and the baselines alike. Request frames to method "echo"
//! get a Response with the same body (other methods: Error unknown_method), like Holdfast's
//! built-in echo handler. Frames are copied whole from the
//! input into the output; incomplete tails stay in the input. The tokio baselines share their
//! accept loop (`serve_tokio`), and the plain TCP and tokio-rustls ones their whole connection
//! loop too (`serve_frames`).

use bytes::BytesMut;
use holdfast_protocol::{
    encode_frame, payload, Header, Kind, HEADER_BYTES, MAX_FRAME_BYTES_DEFAULT,
};

/// Largest frame a baseline accepts.
pub const BASELINE_MAX_FRAME_BYTES: u32 = MAX_FRAME_BYTES_DEFAULT;
/// Read buffer per connection in the baselines.
pub const BASELINE_READ_BYTES: usize = 16 * 1024;
/// Heartbeat interval a baseline announces in Welcome (it never closes idle sessions).
pub const BASELINE_HEARTBEAT_MS: u32 = 30_000;

/// Why a baseline closes a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame;

/// Appends the answers to every complete frame at the front of `input` to `out`; returns the
/// bytes consumed. A header with a bad length or version closes the connection.
pub fn answer_frames(input: &[u8], out: &mut BytesMut, session_id: u64) -> Result<usize, BadFrame> {
    let mut consumed = 0;
    while let Some(header) = input[consumed..].first_chunk::<HEADER_BYTES>() {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if (len as usize) < HEADER_BYTES
            || len > BASELINE_MAX_FRAME_BYTES
            || header[4] != holdfast_protocol::VERSION
        {
            return Err(BadFrame);
        }
        let len = len as usize;
        if input.len() - consumed < len {
            break;
        }
        let frame = &input[consumed..consumed + len];
        let id = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
        match Kind::from_u8(frame[5]) {
            Some(Kind::Hello) => {
                let welcome = payload::Welcome {
                    session_id,
                    heartbeat_ms: BASELINE_HEARTBEAT_MS,
                    heartbeat_timeout_ms: BASELINE_HEARTBEAT_MS * 3,
                    max_frame_bytes: BASELINE_MAX_FRAME_BYTES,
                    max_inflight_requests: 1024,
                };
                encode_frame(out, 0, id, &welcome, BASELINE_MAX_FRAME_BYTES).expect("Welcome fits");
            }
            Some(Kind::Ping) => {
                let mut pong = [0u8; HEADER_BYTES];
                Header::new(Kind::Pong, 0, id).write(&mut pong);
                out.extend_from_slice(&pong);
            }
            Some(Kind::Pong) => {}
            Some(Kind::Request) => answer_request(frame, id, out)?,
            _ => out.extend_from_slice(frame),
        }
        consumed += len;
    }
    Ok(consumed)
}

/// Method "echo" gets a Response with the request body; any other method Error(unknown_method).
fn answer_request(frame: &[u8], id: u64, out: &mut BytesMut) -> Result<(), BadFrame> {
    let parsed =
        holdfast_protocol::next_frame(frame, BASELINE_MAX_FRAME_BYTES).map_err(|_| BadFrame)?;
    let Some(holdfast_protocol::Frame {
        payload: holdfast_protocol::Payload::Request(request),
        ..
    }) = parsed
    else {
        return Err(BadFrame);
    };
    if request.method.as_ref() == "echo" {
        let response = payload::Response {
            body: &request.body,
        };
        encode_frame(out, 0, id, &response, BASELINE_MAX_FRAME_BYTES).map_err(|_| BadFrame)?;
    } else {
        let error = payload::ErrorBody {
            code: holdfast_protocol::ErrorCode::UnknownMethod as u16,
            reason: "baseline servers know only the method \"echo\"",
        };
        encode_frame(out, 0, id, &error, BASELINE_MAX_FRAME_BYTES).map_err(|_| BadFrame)?;
    }
    Ok(())
}

/// Listen backlog: the same as glommio's listeners use.
const LISTEN_BACKLOG: i32 = 1024;

/// A non-blocking listener with SO_REUSEPORT (as glommio's), so several baseline processes can
/// share one port: that is how one client run reaches 100,000 sessions past RLIMIT_NOFILE.
pub fn reuseport_listener(listen: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if listen.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&listen.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Arguments of the TLS and WebSocket baselines: `--listen`, `--cores` and, for TLS, the PEM
/// files `--cert` and `--key`.
pub struct BaselineTlsArgs {
    pub listen: std::net::SocketAddr,
    pub cores: usize,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// Parses `--cert FILE --key FILE` out of the arguments, the rest as [`baseline_args`] does.
pub fn baseline_tls_args(name: &str) -> BaselineTlsArgs {
    let mut cert = None;
    let mut key = None;
    let mut rest = vec![];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cert" | "--key" => {
                let value = args
                    .next()
                    .unwrap_or_else(|| usage(name, &format!("{arg} needs a value")));
                let slot = if arg == "--cert" { &mut cert } else { &mut key };
                *slot = Some(std::path::PathBuf::from(value));
            }
            _ => rest.push(arg),
        }
    }
    let (listen, cores) = parse_baseline_args(name, rest.into_iter());
    BaselineTlsArgs {
        listen,
        cores,
        cert,
        key,
    }
}

/// Parses `--listen ADDR` and `--cores N` (alias `--shards`) for the baseline binaries.
pub fn baseline_args(name: &str) -> (std::net::SocketAddr, usize) {
    parse_baseline_args(name, std::env::args().skip(1))
}

fn parse_baseline_args(
    name: &str,
    mut args: impl Iterator<Item = String>,
) -> (std::net::SocketAddr, usize) {
    let mut listen: std::net::SocketAddr = "127.0.0.1:7879".parse().expect("static");
    let mut cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(name, &format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--listen" => {
                listen = value()
                    .parse()
                    .unwrap_or_else(|e| usage(name, &format!("--listen: {e}")))
            }
            "--cores" | "--shards" => {
                cores = value()
                    .parse()
                    .unwrap_or_else(|e| usage(name, &format!("--cores: {e}")))
            }
            "-h" | "--help" => usage(name, ""),
            other => usage(name, &format!("unknown argument {other}")),
        }
    }
    (listen, cores.max(1))
}

fn usage(name: &str, problem: &str) -> ! {
    eprintln!("{problem}\nusage: {name} [--listen 127.0.0.1:7879] [--cores N] [--cert PEM --key PEM]\n  echoes Holdfast frames byte-exact; answers Hello with Welcome and Ping with Pong");
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

/// A tokio-rustls acceptor for the TLS baselines: the certificate chain and key from PEM files, the
/// ring provider (as Holdfast's TLS listener), TLS 1.3 and 1.2, and one ALPN protocol.
pub fn tokio_tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(std::io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The tokio baselines' accept loop: a multi-thread runtime with `cores` worker threads, an
/// SO_REUSEPORT listener on `listen` (announced on stderr as `LABEL listening on ...`), and a
/// task per accepted connection (TCP_NODELAY set) running `serve`.
pub fn serve_tokio<F, Fut>(
    label: &str,
    listen: std::net::SocketAddr,
    cores: usize,
    serve: F,
) -> std::io::Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(reuseport_listener(listen)?)?;
        eprintln!("{label} listening on {listen} with {cores} worker threads");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    })
}

/// The next session id a baseline's Welcome names: 1, 2, ... in this process.
pub fn next_session_id() -> u64 {
    static NEXT_SESSION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_SESSION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One connection of the tokio baselines, over any byte stream (TCP, or TLS over it): read
/// what is there, answer every whole frame (`answer_frames`), write the answers and flush (a
/// TLS stream holds its records until then; on TCP a flush is a no-op), keep the tail. Ends at
/// EOF, on an error, or at a frame that does not decode.
pub async fn serve_frames<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let session_id = next_session_id();
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
            if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            out.clear();
        }
        if input.capacity() - input.len() < 1024 {
            input.reserve(BASELINE_READ_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::{encode_raw, next_frame, Payload};

    #[test]
    fn echo_is_byte_exact_hello_gets_welcome_and_tail_is_kept() {
        let mut input = BytesMut::new();
        encode_raw(&mut input, Kind::Hello, 0, 1, &[], BASELINE_MAX_FRAME_BYTES).unwrap();
        encode_raw(
            &mut input,
            Kind::Echo,
            0,
            2,
            b"abc",
            BASELINE_MAX_FRAME_BYTES,
        )
        .unwrap();
        encode_raw(&mut input, Kind::Ping, 0, 3, &[], BASELINE_MAX_FRAME_BYTES).unwrap();
        let echo_at = 16;
        let echo_frame = input[echo_at..echo_at + 19].to_vec();
        input.extend_from_slice(&[25, 0, 0]); // a partial header
        let mut out = BytesMut::new();
        let consumed = answer_frames(&input, &mut out, 42).unwrap();
        assert_eq!(consumed, input.len() - 3);
        let welcome = next_frame(&out, BASELINE_MAX_FRAME_BYTES).unwrap().unwrap();
        assert!(matches!(welcome.payload, Payload::Welcome(w) if w.session_id.to_native() == 42));
        let rest = &out[welcome.bytes.len()..];
        assert_eq!(&rest[..19], &echo_frame[..]);
        let pong = next_frame(&rest[19..], BASELINE_MAX_FRAME_BYTES)
            .unwrap()
            .unwrap();
        assert!(matches!(pong.payload, Payload::Pong) && pong.header.id == 3);
    }

    #[test]
    fn bad_length_closes() {
        let mut out = BytesMut::new();
        assert_eq!(
            answer_frames(
                &[3, 0, 0, 0, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &mut out,
                1
            ),
            Err(BadFrame)
        );
    }
}
