//! The TLS crypto provider, measured: server handshakes per CPU-second and bulk encrypt and
//! decrypt MB per CPU-second, through `transport::tls::TlsSession` (the code the shards run),
//! for ring and, with `--features tls-bench-aws-lc-rs`, aws-lc-rs. Only the server side's work
//! is timed (thread CPU time around each server call; the in-memory rustls client is not), so
//! other load on the machine does not skew the numbers much.
//!
//!   cargo bench -p holdfast-server --bench tls --features tls-bench-aws-lc-rs
//!
//! Knobs (environment): TLS_BENCH_HANDSHAKES (per row, default 2000), TLS_BENCH_MIB (bulk bytes
//! per row, default 64).

#[path = "support/measure.rs"]
mod measure;
#[path = "support/tls_pair.rs"]
mod tls_pair;

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::BytesMut;
use holdfast_server::transport::tls::TlsSession;
use measure::{env_or, thread_cpu_ns};
use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite};
use tls_pair::{
    client, client_config, client_output, handshake, server_config, test_cert, TestCert,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Plaintext per encrypt call in the bulk rows: one full record.
const BULK_BATCH_BYTES: usize = 16 * 1024;
/// Plaintext per encrypt call in the small-frame row (a typical Holdfast reply batch).
const SMALL_BATCH_BYTES: usize = 64;
/// Ciphertext handed to one receive call in the decrypt row (a provided buffer's worth).
const RECEIVE_CHUNK_BYTES: usize = 64 * 1024;

fn providers() -> Vec<(&'static str, Arc<CryptoProvider>)> {
    #[allow(unused_mut)]
    let mut providers = vec![("ring", Arc::new(rustls::crypto::ring::default_provider()))];
    #[cfg(feature = "tls-bench-aws-lc-rs")]
    providers.push((
        "aws-lc-rs",
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    ));
    providers
}

fn suite(id: CipherSuite) -> SupportedCipherSuite {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .find(|s| s.suite() == id)
        .expect("ring has the suite")
}

fn main() {
    let handshakes = env_or("TLS_BENCH_HANDSHAKES", 2_000);
    let bulk_bytes = env_or("TLS_BENCH_MIB", 64) * 1024 * 1024;
    let certs = [
        ("ECDSA P-256", test_cert(&rcgen::PKCS_ECDSA_P256_SHA256)),
        ("Ed25519", test_cert(&rcgen::PKCS_ED25519)),
    ];
    // Warm-up, discarded: each provider's first use (lazy tables, first touch of the allocator's
    // pages) would otherwise land in whichever row runs first.
    for (_, provider) in providers() {
        handshake_rate(
            &certs[0].1,
            provider.clone(),
            &rustls::version::TLS13,
            handshakes / 10 + 1,
        );
        let aes = suite(CipherSuite::TLS13_AES_128_GCM_SHA256);
        bulk_rates(&certs[0].1, provider, aes, bulk_bytes);
    }
    println!("# server-side CPU only; X25519 key exchange (the client's first choice)");
    println!(
        "{:<10} {:<12} {:<8} {:>16}",
        "provider", "certificate", "version", "handshakes/CPU-s"
    );
    for (provider_name, provider) in providers() {
        for (cert_name, cert) in &certs {
            for (version_name, version) in [
                ("TLS 1.3", &rustls::version::TLS13),
                ("TLS 1.2", &rustls::version::TLS12),
            ] {
                let rate = handshake_rate(cert, provider.clone(), version, handshakes);
                println!("{provider_name:<10} {cert_name:<12} {version_name:<8} {rate:>16.0}");
            }
        }
    }
    println!();
    println!(
        "{:<10} {:<32} {:>14} {:>14} {:>16}",
        "provider", "suite (TLS 1.3)", "encrypt MB/s", "decrypt MB/s", "64 B encrypts/s"
    );
    let cert = &certs[0].1;
    for (provider_name, provider) in providers() {
        for id in [
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (encrypt, decrypt, small) =
                bulk_rates(cert, provider.clone(), suite(id), bulk_bytes);
            println!(
                "{provider_name:<10} {:<32} {encrypt:>14.0} {decrypt:>14.0} {small:>16.0}",
                format!("{id:?}")
            );
        }
    }
    std::io::stdout().flush().ok();
}

/// Full handshakes per server CPU-second.
fn handshake_rate(
    cert: &TestCert,
    provider: Arc<CryptoProvider>,
    version: &'static rustls::SupportedProtocolVersion,
    handshakes: usize,
) -> f64 {
    let server_config = server_config(cert, provider);
    let client_config = client_config(cert, version, None);
    let mut server_ns = 0;
    for _ in 0..handshakes {
        let mut client = client(&client_config);
        let started = thread_cpu_ns();
        let mut server = TlsSession::new(server_config.clone()).expect("session");
        server_ns += thread_cpu_ns() - started;
        handshake(&mut server, &mut client, |call| {
            let started = thread_cpu_ns();
            call();
            server_ns += thread_cpu_ns() - started;
        });
    }
    handshakes as f64 / (server_ns as f64 / 1e9)
}

/// (encrypt MB/s, decrypt MB/s, 64-byte encrypts/s), per server CPU-second, MB = 10^6 bytes of
/// plaintext.
fn bulk_rates(
    cert: &TestCert,
    provider: Arc<CryptoProvider>,
    suite: SupportedCipherSuite,
    bulk_bytes: usize,
) -> (f64, f64, f64) {
    let server_config = server_config(cert, provider);
    let client_config = client_config(cert, &rustls::version::TLS13, Some(suite));
    let mut server = TlsSession::new(server_config).expect("session");
    let mut client = client(&client_config);
    handshake(&mut server, &mut client, |call| call());
    assert_eq!(server.negotiated_cipher_suite(), Some(suite));

    let plaintext = vec![0x5au8; BULK_BATCH_BYTES];
    let mut out = BytesMut::with_capacity(BULK_BATCH_BYTES + 64);
    let batches = bulk_bytes / BULK_BATCH_BYTES;
    let started = thread_cpu_ns();
    for _ in 0..batches {
        out.clear();
        server.encrypt(&plaintext, &mut out).expect("encrypt");
    }
    let encrypt_ns = thread_cpu_ns() - started;
    let encrypt = (batches * BULK_BATCH_BYTES) as f64 / 1e6 / (encrypt_ns as f64 / 1e9);

    let small_batches = bulk_bytes / 256;
    let started = thread_cpu_ns();
    for _ in 0..small_batches {
        out.clear();
        server
            .encrypt(&plaintext[..SMALL_BATCH_BYTES], &mut out)
            .expect("encrypt");
    }
    let small = small_batches as f64 / ((thread_cpu_ns() - started) as f64 / 1e9);

    // The client's records of the whole run, made first (untimed), then decrypted by the server
    // a receive buffer at a time.
    client.set_buffer_limit(None);
    let mut ciphertext = Vec::with_capacity(bulk_bytes + bulk_bytes / 256);
    for _ in 0..batches {
        client.writer().write_all(&plaintext).expect("client write");
        ciphertext.extend(client_output(&mut client));
    }
    let mut got = 0usize;
    let started = thread_cpu_ns();
    for chunk in ciphertext.chunks_mut(RECEIVE_CHUNK_BYTES) {
        server
            .receive(chunk, &mut out, |p| {
                got += p.len();
                ControlFlow::Continue(())
            })
            .expect("receive");
    }
    let decrypt_ns = thread_cpu_ns() - started;
    assert_eq!(got, batches * BULK_BATCH_BYTES);
    let decrypt = got as f64 / 1e6 / (decrypt_ns as f64 / 1e9);
    (encrypt, decrypt, small)
}
