//! A server `TlsSession` and an in-memory rustls client, for the TLS benches.

#![allow(dead_code)] // each bench uses part of it

use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::BytesMut;
use holdfast_server::transport::tls::{self, TlsSession, ALPN_HOLDFAST};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

/// A self-signed certificate for `localhost`, made in memory.
pub struct TestCert {
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

pub fn test_cert(alg: &'static rcgen::SignatureAlgorithm) -> TestCert {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    TestCert {
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

pub fn server_config(cert: &TestCert, provider: Arc<CryptoProvider>) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    tls::server_config(provider, vec![cert.cert_der.clone()], key).expect("server config")
}

/// A client that trusts `cert`, speaks `version` and, if given, only `suite`.
pub fn client_config(
    cert: &TestCert,
    version: &'static rustls::SupportedProtocolVersion,
    suite: Option<rustls::SupportedCipherSuite>,
) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert_der.clone()).expect("root");
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HOLDFAST.to_vec()];
    Arc::new(config)
}

pub fn client(config: &Arc<ClientConfig>) -> ClientConnection {
    let name = ServerName::try_from("localhost").expect("name");
    ClientConnection::new(Arc::clone(config), name).expect("client")
}

/// Everything the client wants to send, as ciphertext.
pub fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    let mut bytes = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut bytes).expect("write_tls");
    }
    bytes
}

/// Hands server output to the client; returns the plaintext the client got.
pub fn to_client(client: &mut ClientConnection, mut bytes: &[u8]) -> Vec<u8> {
    let mut plaintext = Vec::new();
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).expect("read_tls");
        let state = client.process_new_packets().expect("client");
        let mut chunk = vec![0; state.plaintext_bytes_to_read()];
        client.reader().read_exact(&mut chunk).expect("plaintext");
        plaintext.extend_from_slice(&chunk);
    }
    plaintext
}

/// Feeds `bytes` to the server; returns its output. Panics on a TLS error.
pub fn to_server(server: &mut TlsSession, bytes: &mut [u8]) -> BytesMut {
    let mut out = BytesMut::new();
    server
        .receive(bytes, &mut out, |_| ControlFlow::Continue(()))
        .expect("server");
    out
}

/// Runs a handshake to completion. `server_side` wraps every server call (timing).
pub fn handshake(
    server: &mut TlsSession,
    client: &mut ClientConnection,
    mut server_side: impl FnMut(&mut dyn FnMut()),
) {
    for _ in 0..16 {
        let mut bytes = client_output(client);
        let mut out = BytesMut::new();
        server_side(&mut || out = to_server(server, &mut bytes));
        to_client(client, &out);
        if !server.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            return;
        }
    }
    panic!("handshake did not complete");
}
