//! An idle TLS session's heap, held to its measured size: sessions after a handshake and some
//! traffic hold no buffer of their own, the rustls state stays at what
//! `benches/tls_idle_memory.rs` breaks down (docs/ARCHITECTURE.md, "TLS"), and more traffic
//! does not grow it. Its own test binary, because it counts with its own global allocator.

#[path = "../benches/support/tls_pair.rs"]
mod tls_pair;

use std::io::Write;
use std::ops::ControlFlow;

use bytes::BytesMut;
use holdfast_server::transport::tls::{self, TlsSession};
use tls_pair::{
    client, client_config, client_output, handshake, server_config, test_cert, to_client,
};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SESSIONS: usize = 200;
/// The measured figure (3,324 B for TLS 1.3 with AES-GCM, rustls 0.23 + ring) plus ~5 %: the
/// floor of rustls's per-connection state, see the breakdown in docs/ARCHITECTURE.md.
const IDLE_TLS_SESSION_HEAP_BYTES_MAX: usize = 3_500;

fn exchange(server: &mut TlsSession, client: &mut rustls::ClientConnection, bytes: usize) {
    client
        .writer()
        .write_all(&vec![1u8; bytes])
        .expect("client write");
    let mut ciphertext = client_output(client);
    let mut out = BytesMut::new();
    let mut got = 0;
    server
        .receive(&mut ciphertext, &mut out, |p| {
            got += p.len();
            ControlFlow::Continue(())
        })
        .expect("receive");
    assert_eq!(got, bytes);
    server
        .encrypt(&vec![2u8; bytes], &mut out)
        .expect("encrypt");
    assert_eq!(to_client(client, &out).len(), bytes);
}

#[test]
fn idle_tls_sessions_hold_no_buffer_stay_at_the_rustls_floor_and_do_not_grow() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let cert = test_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let server_config = server_config(&cert, tls::crypto_provider());
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client_config = client_config(&cert, version, None);
        // Size: the clients are dropped, the sessions are all that is left.
        let mut sessions = Vec::with_capacity(SESSIONS);
        let before = dhat::HeapStats::get().curr_bytes;
        for _ in 0..SESSIONS {
            let mut server = Box::new(TlsSession::new(server_config.clone()).expect("session"));
            let mut client = client(&client_config);
            handshake(&mut server, &mut client, |f| f());
            exchange(&mut server, &mut client, 64);
            assert_eq!(server.held_capacity_bytes(), 0);
            drop(client);
            sessions.push(server);
        }
        let per_session = (dhat::HeapStats::get().curr_bytes - before) / SESSIONS;
        assert!(
            per_session <= IDLE_TLS_SESSION_HEAP_BYTES_MAX,
            "{version:?}: {per_session} heap bytes per idle session"
        );
        drop(sessions);

        // Growth: sessions and clients that keep talking take no more heap once idle again.
        let mut pairs: Vec<_> = (0..SESSIONS / 10)
            .map(|_| {
                let mut server = TlsSession::new(server_config.clone()).expect("session");
                let mut client = client(&client_config);
                handshake(&mut server, &mut client, |f| f());
                exchange(&mut server, &mut client, 64);
                (server, client)
            })
            .collect();
        let settled = dhat::HeapStats::get().curr_bytes;
        for _ in 0..3 {
            for (server, client) in pairs.iter_mut() {
                // Records larger than one, then a small frame.
                exchange(server, client, 40_000);
                exchange(server, client, 64);
                assert_eq!(server.held_capacity_bytes(), 0);
            }
        }
        let after_traffic = dhat::HeapStats::get().curr_bytes;
        assert!(
            after_traffic <= settled,
            "{version:?}: idle sessions grew by {} bytes after traffic",
            after_traffic - settled
        );
    }
}
