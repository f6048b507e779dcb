//! The Hello auth token: HMAC-SHA256 over client id and expiry, checked MAC first.

use holdfast_protocol::token::{sign, verify, TokenError, TOKEN_BYTES};

const SECRET: &[u8] = b"correct horse battery staple";
const NOW: u64 = 1_700_000_000;

#[test]
fn token_signed_for_a_client_verifies_before_expiry() {
    let token = sign(SECRET, "client-7", NOW + 60);
    assert_eq!(token.len(), TOKEN_BYTES);
    assert_eq!(
        &token[..8],
        &(NOW + 60).to_le_bytes(),
        "expiry leads, little-endian"
    );
    assert_eq!(verify(SECRET, "client-7", &token, NOW), Ok(()));
    assert_eq!(verify(SECRET, "client-7", &token, NOW + 59), Ok(()));
}

#[test]
fn token_under_a_different_secret_is_refused() {
    let token = sign(b"other secret", "client-7", NOW + 60);
    assert_eq!(
        verify(SECRET, "client-7", &token, NOW),
        Err(TokenError::BadMac)
    );
}

#[test]
fn token_for_a_different_client_id_is_refused() {
    let token = sign(SECRET, "client-7", NOW + 60);
    assert_eq!(
        verify(SECRET, "client-8", &token, NOW),
        Err(TokenError::BadMac)
    );
}

#[test]
fn token_is_expired_from_its_expiry_second_on() {
    let token = sign(SECRET, "client-7", NOW);
    let expired = Err(TokenError::Expired { expiry_unix_s: NOW });
    assert_eq!(verify(SECRET, "client-7", &token, NOW), expired);
    assert_eq!(verify(SECRET, "client-7", &token, NOW + 1), expired);
    assert_eq!(verify(SECRET, "client-7", &token, NOW - 1), Ok(()));
}

#[test]
fn token_with_an_extended_expiry_fails_the_mac() {
    let mut token = sign(SECRET, "client-7", NOW);
    token[..8].copy_from_slice(&(NOW + 3600).to_le_bytes());
    assert_eq!(
        verify(SECRET, "client-7", &token, NOW),
        Err(TokenError::BadMac)
    );
}

#[test]
fn token_of_the_wrong_length_is_malformed() {
    let token = sign(SECRET, "client-7", NOW + 60);
    let mut long = token.to_vec();
    long.push(0);
    for bytes in [&[][..], &token[..8], &token[..TOKEN_BYTES - 1], &long[..]] {
        assert_eq!(
            verify(SECRET, "client-7", bytes, NOW),
            Err(TokenError::Malformed),
            "{} bytes",
            bytes.len()
        );
    }
}
