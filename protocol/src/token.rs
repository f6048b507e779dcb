//! The Hello auth token: `expiry_unix_s` (u64 LE) followed by
//! HMAC-SHA256(secret, client_id bytes || expiry_unix_s LE), 40 bytes in all.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a token.
pub const TOKEN_BYTES: usize = 8 + 32;

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token must be {TOKEN_BYTES} bytes")]
    Malformed,
    #[error("token MAC does not verify for this client id")]
    BadMac,
    #[error("token expired at unix second {expiry_unix_s}")]
    Expired { expiry_unix_s: u64 },
}

fn mac(secret: &[u8], client_id: &str, expiry_unix_s: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(client_id.as_bytes());
    mac.update(&expiry_unix_s.to_le_bytes());
    mac
}

/// Makes a token for `client_id` valid until `expiry_unix_s`.
pub fn sign(secret: &[u8], client_id: &str, expiry_unix_s: u64) -> [u8; TOKEN_BYTES] {
    let mut token = [0u8; TOKEN_BYTES];
    token[..8].copy_from_slice(&expiry_unix_s.to_le_bytes());
    token[8..].copy_from_slice(
        &mac(secret, client_id, expiry_unix_s)
            .finalize()
            .into_bytes(),
    );
    token
}

/// Checks a token: MAC first (constant-time compare), then expiry against `now_unix_s`.
pub fn verify(
    secret: &[u8],
    client_id: &str,
    token: &[u8],
    now_unix_s: u64,
) -> Result<(), TokenError> {
    let Some((expiry_bytes, tag)) = token.split_first_chunk::<8>() else {
        return Err(TokenError::Malformed);
    };
    if tag.len() != 32 {
        return Err(TokenError::Malformed);
    }
    let expiry_unix_s = u64::from_le_bytes(*expiry_bytes);
    mac(secret, client_id, expiry_unix_s)
        .verify_slice(tag)
        .map_err(|_| TokenError::BadMac)?;
    if now_unix_s >= expiry_unix_s {
        return Err(TokenError::Expired { expiry_unix_s });
    }
    Ok(())
}
