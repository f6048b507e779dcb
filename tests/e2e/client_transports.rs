//! holdfast-client on every transport the server listens on: TLS (`tls_listen`, ALPN
//! holdfast/1), WebSocket (`ws_listen`) and wss (WebSocket inside TLS on `tls_listen`). Each
//! goes through a fault proxy that cuts the connection mid-stream while a publisher keeps
//! going: the client reconnects over the same transport, resumes, and gets every push once, in
//! order, with no gap. A client that does not trust the server's certificate never gets a
//! session.

use std::net::SocketAddr;

use holdfast_client::{Client, ClientConfig, ConnectionState, Endpoint, TlsTrust};

use crate::client::every_push_once_across_a_cut;
use crate::fault_proxy::FaultProxy;
use crate::support::{Server, REPLY_TIMEOUT_MS};

/// Pushes published in each resume test, and after how many the link is cut.
const PUBLISHED: u64 = 300;
const CUT_AFTER: u64 = 50;

/// A server with the TLS and WebSocket listeners on, history big enough for the whole test.
fn server(dir: &std::path::Path) -> (Server, TlsTrust) {
    let cert = crate::tls::write_cert(dir);
    let server = crate::tls::start(
        dir,
        "shards = 2\nws_listen = \"127.0.0.1:0\"\nws_path = \"/ws\"\n\
         history_max_messages = 100000\n",
    );
    let trust = TlsTrust::from_der([cert]).expect("the test certificate is a valid root");
    (server, trust)
}

/// Test-sized timeouts and backoff for `endpoint`.
fn config(endpoint: Endpoint) -> ClientConfig {
    let mut config = ClientConfig::new(endpoint);
    config.request_timeout_ms = REPLY_TIMEOUT_MS;
    config.reconnect_base_delay_ms = 50;
    config.reconnect_max_delay_ms = 400;
    config
}

/// Connects with `endpoint_for(proxy address)`, checks a request is answered, subscribes to
/// "news", and runs `every_push_once_across_a_cut` (PUBLISHED pushes, the link cut after
/// CUT_AFTER arrived): every push once, in order, with no gap, over two sessions.
async fn resumes_across_a_cut(
    server: &Server,
    listener: SocketAddr,
    endpoint_for: impl Fn(String) -> Endpoint,
) {
    let proxy = FaultProxy::start(listener);
    let (client, mut pushes) = Client::connect(config(endpoint_for(proxy.addr().to_string())))
        .await
        .expect("client connects through the proxy");
    // The echo method answers over this transport too.
    assert_eq!(
        &client.request("echo", "over the wire").await.unwrap()[..],
        b"over the wire"
    );
    client.subscribe(["news"]).await.unwrap();
    every_push_once_across_a_cut(server, &proxy, &client, &mut pushes, PUBLISHED, CUT_AFTER).await;
    client.close().await;
}

#[tokio::test]
async fn client_over_tls_resumes_across_a_cut_connection_with_every_push_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, trust) = server(dir.path());
    let tls = server.tls.expect("tls listener");
    resumes_across_a_cut(&server, tls, |addr| Endpoint::Tls {
        addr,
        server_name: Some("localhost".into()),
        trust: trust.clone(),
    })
    .await;
}

#[tokio::test]
async fn client_over_websocket_resumes_across_a_cut_connection_with_every_push_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(dir.path());
    let ws = server.ws.expect("ws listener");
    resumes_across_a_cut(&server, ws, |addr| {
        ClientConfig::websocket(addr, "/ws").endpoint
    })
    .await;
}

#[tokio::test]
async fn client_over_wss_resumes_across_a_cut_connection_with_every_push_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, trust) = server(dir.path());
    let tls = server.tls.expect("tls listener");
    resumes_across_a_cut(&server, tls, |addr| Endpoint::WebSocket {
        addr,
        path: "/ws".into(),
        tls: Some(holdfast_client::TlsOptions {
            server_name: Some("localhost".into()),
            trust: trust.clone(),
        }),
    })
    .await;
}

#[tokio::test]
async fn client_that_does_not_trust_the_servers_certificate_gets_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server(dir.path());
    // A different self-signed certificate: the server's is not signed by it.
    let other = tempfile::tempdir().unwrap();
    let stranger = TlsTrust::from_der([crate::tls::write_cert(other.path())]).unwrap();
    let tls = server.tls.expect("tls listener").to_string();
    for endpoint in [
        ClientConfig::tls(tls.clone(), stranger.clone()).endpoint,
        ClientConfig::wss(tls.clone(), "/ws", stranger.clone()).endpoint,
    ] {
        let mut config = config(endpoint.clone());
        config.reconnect_max_attempts = Some(1);
        let refused = Client::connect(config).await;
        let error = refused
            .err()
            .unwrap_or_else(|| panic!("{endpoint:?} got a session"));
        let text = error.to_string();
        assert!(text.contains("certificate"), "{endpoint:?}: {text}");
    }
    // The same listener serves a client that trusts it.
    let pem = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let trust = TlsTrust::from_pem(&pem).unwrap();
    let (client, _pushes) = Client::connect(config(ClientConfig::tls(tls, trust).endpoint))
        .await
        .expect("a trusting client connects");
    assert!(matches!(client.state(), ConnectionState::Connected(_)));
    client.close().await;
}
