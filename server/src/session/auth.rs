//! Hello checks: protocol version, client id bounds, and (when a secret is configured) the
//! HMAC token, compared in constant time by the hmac crate.

use holdfast_protocol::payload::{HelloView, MAX_CLIENT_ID_BYTES};
use holdfast_protocol::token::{self, TokenError};
use holdfast_protocol::{ErrorCode, VERSION};

/// A Hello the session layer may answer with Welcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Heartbeat interval the client asked for (0 = none asked).
    pub requested_heartbeat_ms: u32,
}

/// Seconds since the Unix epoch, the clock tokens expire by (read per Hello only).
pub(crate) fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a Hello; `secret` None means auth is off.
pub(crate) fn admit(
    hello: Option<&HelloView>,
    secret: Option<&[u8]>,
    now_unix_s: u64,
) -> Result<Admitted, (ErrorCode, &'static str)> {
    let Some(hello) = hello else {
        return match secret {
            None => Ok(Admitted {
                requested_heartbeat_ms: 0,
            }),
            Some(_) => Err((
                ErrorCode::AuthFailed,
                "auth is on: send a Hello with client_id and token",
            )),
        };
    };
    if !hello.versions.contains(&VERSION) {
        return Err((
            ErrorCode::UnsupportedVersion,
            "server speaks protocol version 1 only",
        ));
    }
    let client_id: &str = &hello.client_id;
    if client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err((ErrorCode::LimitExceeded, "client_id over 256 bytes"));
    }
    if let Some(secret) = secret {
        match token::verify(secret, client_id, &hello.token, now_unix_s) {
            Ok(()) => {}
            Err(TokenError::Expired { .. }) => {
                return Err((ErrorCode::AuthExpired, "token expired: get a new one"))
            }
            Err(TokenError::Malformed) => {
                return Err((ErrorCode::AuthFailed, "token malformed: 40 bytes expected"))
            }
            Err(TokenError::BadMac) => {
                return Err((
                    ErrorCode::AuthFailed,
                    "token does not verify for this client_id",
                ))
            }
        }
    }
    Ok(Admitted {
        requested_heartbeat_ms: hello.heartbeat_ms.to_native(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use holdfast_protocol::{encode_frame, next_frame, payload::Hello, Payload};

    fn with_hello<R>(hello: &Hello<'_>, f: impl FnOnce(&HelloView) -> R) -> R {
        let mut out = BytesMut::new();
        encode_frame(&mut out, 0, 1, hello, 65_536).unwrap();
        let frame = next_frame(&out, 65_536).unwrap().unwrap();
        let Payload::Hello(Some(view)) = frame.payload else {
            panic!("full hello")
        };
        f(view)
    }

    const SECRET: &[u8] = b"0123456789abcdef";

    #[test]
    fn anonymous_hello_only_without_secret() {
        assert!(admit(None, None, 0).is_ok());
        assert_eq!(
            admit(None, Some(SECRET), 0).unwrap_err().0,
            ErrorCode::AuthFailed
        );
    }

    #[test]
    fn token_accepted_refused_and_expired() {
        let token = token::sign(SECRET, "alice", 1_000);
        let hello = Hello {
            client_id: "alice",
            token: &token,
            versions: &[1],
            heartbeat_ms: 0,
        };
        with_hello(&hello, |h| {
            assert!(admit(Some(h), Some(SECRET), 999).is_ok())
        });
        with_hello(&hello, |h| {
            assert_eq!(
                admit(Some(h), Some(SECRET), 1_000).unwrap_err().0,
                ErrorCode::AuthExpired
            )
        });
        with_hello(&hello, |h| {
            assert_eq!(
                admit(Some(h), Some(b"another-secret-16"), 999)
                    .unwrap_err()
                    .0,
                ErrorCode::AuthFailed
            )
        });
        let mallory = Hello {
            client_id: "mallory",
            ..hello
        };
        with_hello(&mallory, |h| {
            assert_eq!(
                admit(Some(h), Some(SECRET), 999).unwrap_err().0,
                ErrorCode::AuthFailed
            )
        });
    }

    #[test]
    fn hello_without_version_one_is_refused() {
        let hello = Hello {
            client_id: "a",
            token: &[],
            versions: &[2],
            heartbeat_ms: 0,
        };
        with_hello(&hello, |h| {
            assert_eq!(
                admit(Some(h), None, 0).unwrap_err().0,
                ErrorCode::UnsupportedVersion
            )
        });
    }
}
