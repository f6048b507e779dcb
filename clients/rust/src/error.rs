//! [`Error`]: one variant per class of protocol error code the server sends, plus what can go
//! wrong on this side (transport, timeout, a lost or closed connection).

use std::fmt;
use std::sync::Arc;

use holdfast_protocol::{DecodeError, ErrorCode, Kind};

/// An Error frame from the server: its stable code and the reason it gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// The stable code (docs/PROTOCOL.md, "Error codes").
    pub code: ErrorCode,
    /// The server's short, human-readable reason.
    pub reason: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}): {}",
            self.code.name(),
            self.code as u16,
            self.reason
        )
    }
}

/// Everything a call, a connection attempt or the connection itself can fail with.
///
/// Errors the server reports are grouped by what the caller can do about them; each keeps the
/// exact [`ServerError`] (see [`Error::code`]).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not parse a frame this client sent (`bad_version`, `length_too_small`,
    /// `length_too_large`, `reserved_flags`, `unknown_kind`, `invalid_archive`): a bug in this
    /// client or a version mismatch. The server closes the connection.
    #[error("the server refused a malformed frame: {0}")]
    BadFrame(ServerError),
    /// The Hello's token was refused (`auth_failed`) or has expired (`auth_expired`). The
    /// client does not retry with the same credentials: it closes.
    #[error("authentication refused: {0}")]
    Auth(ServerError),
    /// The session state machine refused (`unexpected_frame`, `unsupported_version`,
    /// `hello_timeout`, `heartbeat_timeout`).
    #[error("session refused: {0}")]
    Session(ServerError),
    /// A server limit was hit (`slow_consumer`, `too_many_inflight`, `limit_exceeded`). For an
    /// acked event, `limit_exceeded` means the event pipeline was full and the event dropped;
    /// the connection stays open.
    #[error("server limit exceeded: {0}")]
    Limit(ServerError),
    /// The request's handler answered with an error (`unknown_method`, `handler_failed`); the
    /// connection stays open.
    #[error("request failed: {0}")]
    Method(ServerError),
    /// The server cannot take the session or the request now (`server_full`,
    /// `shutting_down`, `unavailable`): retry later or elsewhere. The client's reconnect loop does so by itself.
    #[error("server unavailable: {0}")]
    Unavailable(ServerError),
    /// An Error frame with a code this client does not know (a newer server); fatal for the
    /// call it answers, as the protocol says.
    #[error("server error with unknown code {code}: {reason}")]
    UnknownCode {
        /// The code as sent.
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The server said Goodbye (it is draining); the client reconnects no sooner than
    /// `reconnect_after_ms`.
    #[error("the server said goodbye ({reason}); reconnect after {reconnect_after_ms} ms")]
    Goodbye {
        /// The server's reason.
        reason: String,
        /// The server's hint: reconnect no sooner than this.
        reconnect_after_ms: u32,
    },
    /// Connecting, reading or writing failed, or the server closed the connection.
    #[error("transport: {0}")]
    Transport(Arc<std::io::Error>),
    /// The server sent bytes that are not a valid frame; the connection is dropped.
    #[error("the server sent an invalid frame: {0}")]
    Decode(DecodeError),
    /// The server sent a frame the session does not expect at that point (e.g. not Welcome
    /// first, or a client-only kind).
    #[error("the server sent an unexpected {kind:?} frame (id {id})")]
    UnexpectedFrame {
        /// Its kind.
        kind: Kind,
        /// Its id.
        id: u64,
    },
    /// A deadline passed: `waiting_for` says which one.
    #[error("timed out after {after_ms} ms waiting for {waiting_for}")]
    Timeout {
        /// What did not arrive: "connect", "welcome", "reply", "server heartbeat".
        waiting_for: &'static str,
        /// The deadline, in milliseconds.
        after_ms: u64,
    },
    /// The connection was lost after the frame was sent and before its answer arrived: the
    /// server may or may not have acted on it. Retrying is the caller's decision.
    #[error("the connection was lost before the answer arrived; the server may have acted on it")]
    ConnectionLost,
    /// The frame would exceed the server's `max_frame_bytes` (from Welcome); nothing was sent.
    #[error("the frame would exceed the server's max_frame_bytes {max_frame_bytes}")]
    FrameTooLarge {
        /// The server's limit, in bytes.
        max_frame_bytes: u32,
    },
    /// Refused before anything was sent: an unusable configuration or argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The client was closed (by [`Client::close`](crate::Client::close), by dropping every
    /// handle, or after giving up reconnecting: see [`Client::state`](crate::Client::state)).
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// An Error frame's code and reason, classified.
    pub fn from_server(code: u16, reason: &str) -> Error {
        let Some(known) = ErrorCode::from_u16(code) else {
            return Error::UnknownCode {
                code,
                reason: reason.to_owned(),
            };
        };
        let server = ServerError {
            code: known,
            reason: reason.to_owned(),
        };
        // Exhaustive on purpose: a code added to the protocol must be given a class here.
        match known {
            ErrorCode::BadVersion
            | ErrorCode::LengthTooSmall
            | ErrorCode::LengthTooLarge
            | ErrorCode::ReservedFlags
            | ErrorCode::UnknownKind
            | ErrorCode::InvalidArchive => Error::BadFrame(server),
            ErrorCode::AuthFailed | ErrorCode::AuthExpired => Error::Auth(server),
            ErrorCode::UnexpectedFrame
            | ErrorCode::UnsupportedVersion
            | ErrorCode::HelloTimeout
            | ErrorCode::HeartbeatTimeout => Error::Session(server),
            ErrorCode::SlowConsumer | ErrorCode::TooManyInflight | ErrorCode::LimitExceeded => {
                Error::Limit(server)
            }
            ErrorCode::UnknownMethod | ErrorCode::HandlerFailed => Error::Method(server),
            ErrorCode::ServerFull | ErrorCode::ShuttingDown | ErrorCode::Unavailable => {
                Error::Unavailable(server)
            }
        }
    }

    /// The server's error code, when this error is an Error frame with a known code.
    pub fn code(&self) -> Option<ErrorCode> {
        self.server_error().map(|server| server.code)
    }

    /// The Error frame behind this error, when there is one with a known code.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::BadFrame(server)
            | Error::Auth(server)
            | Error::Session(server)
            | Error::Limit(server)
            | Error::Method(server)
            | Error::Unavailable(server) => Some(server),
            _ => None,
        }
    }

    /// True when trying again with the same configuration cannot succeed, so the reconnect
    /// loop stops: refused credentials, a frame or version the server does not accept, or an
    /// invalid configuration.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Auth(_) | Error::BadFrame(_) | Error::Invalid(_) | Error::Closed => true,
            Error::Session(server) => server.code == ErrorCode::UnsupportedVersion,
            _ => false,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::Transport(Arc::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_code_has_a_class_and_keeps_its_code() {
        for code in ErrorCode::ALL {
            let error = Error::from_server(code as u16, "why");
            assert_eq!(error.code(), Some(code), "{error}");
            assert_eq!(error.server_error().unwrap().reason, "why");
        }
        assert!(matches!(
            Error::from_server(2, ""),
            Error::BadFrame(ServerError {
                code: ErrorCode::LengthTooSmall,
                ..
            })
        ));
        assert!(matches!(Error::from_server(8, ""), Error::Auth(_)));
        assert!(matches!(Error::from_server(14, ""), Error::Method(_)));
        assert!(matches!(Error::from_server(18, ""), Error::Limit(_)));
        assert!(matches!(Error::from_server(19, ""), Error::Unavailable(_)));
        assert!(matches!(Error::from_server(20, ""), Error::Unavailable(_)));
    }

    #[test]
    fn unknown_codes_are_kept_not_guessed() {
        for code in [0u16, 21, 999, u16::MAX] {
            let error = Error::from_server(code, "newer server");
            assert!(
                matches!(error, Error::UnknownCode { code: c, .. } if c == code),
                "{error}"
            );
            assert_eq!(error.code(), None);
        }
    }

    #[test]
    fn only_hopeless_errors_stop_reconnecting() {
        assert!(Error::from_server(ErrorCode::AuthExpired as u16, "").is_permanent());
        assert!(Error::from_server(ErrorCode::UnsupportedVersion as u16, "").is_permanent());
        assert!(!Error::from_server(ErrorCode::ShuttingDown as u16, "").is_permanent());
        assert!(!Error::from_server(ErrorCode::HeartbeatTimeout as u16, "").is_permanent());
        assert!(!Error::ConnectionLost.is_permanent());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!Error::from(refused).is_permanent());
    }
}
