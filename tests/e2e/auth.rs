use holdfast_protocol::token;
use holdfast_protocol::{ErrorCode, Kind};

use crate::support::{Ending, Server};

const SECRET: &str = "test-secret-of-some-length";

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn server() -> Server {
    Server::start(&format!("shards = 1\nauth_secret = \"{SECRET}\"\n"))
}

#[test]
fn valid_token_is_welcomed() {
    let server = server();
    let mut client = server.connect();
    let token = token::sign(SECRET.as_bytes(), "device-1", now_unix_s() + 60);
    assert_eq!(client.hello_with("device-1", &token).kind, Kind::Welcome);
}

#[test]
fn token_for_another_client_id_is_refused_and_closed() {
    let server = server();
    let mut client = server.connect();
    let token = token::sign(SECRET.as_bytes(), "device-1", now_unix_s() + 60);
    assert_eq!(
        client.hello_with("device-2", &token).error_code(),
        Some(ErrorCode::AuthFailed)
    );
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn expired_token_is_refused_with_auth_expired() {
    let server = server();
    let mut client = server.connect();
    let token = token::sign(SECRET.as_bytes(), "device-1", now_unix_s() - 1);
    assert_eq!(
        client.hello_with("device-1", &token).error_code(),
        Some(ErrorCode::AuthExpired)
    );
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn anonymous_hello_is_refused_when_auth_is_on() {
    let server = server();
    let mut client = server.connect();
    client.send(Kind::Hello, 1, &[]);
    assert_eq!(client.recv().error_code(), Some(ErrorCode::AuthFailed));
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn secret_from_environment_is_used() {
    let server = Server::start_with("shards = 1\n", &[("HOLDFAST_AUTH_SECRET", SECRET)]);
    let mut client = server.connect();
    client.send(Kind::Hello, 1, &[]);
    assert_eq!(
        client.recv().error_code(),
        Some(ErrorCode::AuthFailed),
        "env var turned auth on"
    );
}
