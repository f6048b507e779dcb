//! Stable error codes carried in Error frames. Codes never change meaning; new ones are appended.

/// A protocol error code (u16 on the wire, inside the Error payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Header version byte is not [`crate::VERSION`].
    BadVersion = 1,
    /// Header `len` below 16.
    LengthTooSmall = 2,
    /// Header `len` above the receiver's `max_frame_bytes`.
    LengthTooLarge = 3,
    /// A reserved flag bit is set.
    ReservedFlags = 4,
    /// Kind byte is not a known kind.
    UnknownKind = 5,
    /// Payload is not a valid archive of the kind's layout.
    InvalidArchive = 6,
    /// Hello token missing, malformed, or its MAC does not verify.
    AuthFailed = 7,
    /// Hello token verified but has expired.
    AuthExpired = 8,
    /// A frame that the session state does not allow (e.g. Echo before Hello, second Hello).
    UnexpectedFrame = 9,
    /// None of the Hello's protocol versions is spoken by the server.
    UnsupportedVersion = 10,
    /// The client did not read its replies; its outbound queue hit `max_outbound_bytes`.
    SlowConsumer = 11,
    /// More requests in flight than `max_inflight_requests`.
    TooManyInflight = 12,
    /// A Request named a handler method that does not exist.
    UnknownMethod = 13,
    /// The handler refused or failed the request.
    HandlerFailed = 14,
    /// The server holds its configured maximum of connections.
    ServerFull = 15,
    /// No Hello within `hello_timeout_ms`.
    HelloTimeout = 16,
    /// No frame within `heartbeat_timeout_ms`.
    HeartbeatTimeout = 17,
    /// A limit other than frame size was exceeded (e.g. too many topics).
    LimitExceeded = 18,
    /// The server is shutting down.
    ShuttingDown = 19,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadVersion,
        ErrorCode::LengthTooSmall,
        ErrorCode::LengthTooLarge,
        ErrorCode::ReservedFlags,
        ErrorCode::UnknownKind,
        ErrorCode::InvalidArchive,
        ErrorCode::AuthFailed,
        ErrorCode::AuthExpired,
        ErrorCode::UnexpectedFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::SlowConsumer,
        ErrorCode::TooManyInflight,
        ErrorCode::UnknownMethod,
        ErrorCode::HandlerFailed,
        ErrorCode::ServerFull,
        ErrorCode::HelloTimeout,
        ErrorCode::HeartbeatTimeout,
        ErrorCode::LimitExceeded,
        ErrorCode::ShuttingDown,
    ];

    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        match code {
            1..=19 => Some(ErrorCode::ALL[usize::from(code) - 1]),
            _ => None,
        }
    }

    /// A short, stable, snake_case name (used in logs and metric labels).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::LengthTooSmall => "length_too_small",
            ErrorCode::LengthTooLarge => "length_too_large",
            ErrorCode::ReservedFlags => "reserved_flags",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::InvalidArchive => "invalid_archive",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthExpired => "auth_expired",
            ErrorCode::UnexpectedFrame => "unexpected_frame",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::TooManyInflight => "too_many_inflight",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::HandlerFailed => "handler_failed",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::HelloTimeout => "hello_timeout",
            ErrorCode::HeartbeatTimeout => "heartbeat_timeout",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::ShuttingDown => "shutting_down",
        }
    }
}
