//! Minting Hello tokens the way the server verifies them (`holdfast_protocol::token`): the
//! expiry as a little-endian u64, then HMAC-SHA256(secret, client id ‖ expiry).

use std::time::{SystemTime, UNIX_EPOCH};

pub use holdfast_protocol::token::TOKEN_BYTES;

/// A token for `client_id` that the server (configured with `auth_secret = secret`) accepts
/// for `ttl_s` seconds from now.
///
/// Only code that may hold the server's secret should call this (a backend issuing tokens to
/// devices, or a trusted service connecting itself); devices should be handed a token.
///
/// ```
/// let token = holdfast_client::mint_token(b"server-secret", "device-1", 3_600);
/// assert_eq!(token.len(), holdfast_client::TOKEN_BYTES);
/// ```
pub fn mint_token(secret: &[u8], client_id: &str, ttl_s: u64) -> [u8; TOKEN_BYTES] {
    // A clock before 1970 is a broken host; the token is then already expired and the server
    // says so (AuthExpired) rather than this function panicking.
    let now_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    holdfast_protocol::token::sign(secret, client_id, now_unix_s.saturating_add(ttl_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let token = mint_token(b"secret", "device-1", 60);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let verify = |client_id: &str, at: u64| {
            holdfast_protocol::token::verify(b"secret", client_id, &token, at)
        };
        assert_eq!(verify("device-1", now), Ok(()));
        assert!(verify("device-2", now).is_err(), "bound to its client id");
        assert!(verify("device-1", now + 61).is_err(), "expires after ttl_s");
    }
}
