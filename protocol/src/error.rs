//! Stable error codes carried in Error frames. Codes never change meaning; new ones are appended.

use crate::wire_codes;

wire_codes! {
    /// A protocol error code (u16 on the wire, inside the Error payload).
    pub enum ErrorCode: u16, from_u16 {
        /// Header version byte is not [`crate::VERSION`].
        BadVersion = 1 => "bad_version",
        /// Header `len` below 16.
        LengthTooSmall = 2 => "length_too_small",
        /// Header `len` above the receiver's `max_frame_bytes`.
        LengthTooLarge = 3 => "length_too_large",
        /// A reserved flag bit is set.
        ReservedFlags = 4 => "reserved_flags",
        /// Kind byte is not a known kind.
        UnknownKind = 5 => "unknown_kind",
        /// Payload is not a valid archive of the kind's layout.
        InvalidArchive = 6 => "invalid_archive",
        /// Hello token missing, malformed, or its MAC does not verify.
        AuthFailed = 7 => "auth_failed",
        /// Hello token verified but has expired.
        AuthExpired = 8 => "auth_expired",
        /// A frame that the session state does not allow (e.g. Echo before Hello, second Hello).
        UnexpectedFrame = 9 => "unexpected_frame",
        /// None of the Hello's protocol versions is spoken by the server.
        UnsupportedVersion = 10 => "unsupported_version",
        /// The client did not read its replies; its outbound queue hit `max_outbound_bytes`.
        SlowConsumer = 11 => "slow_consumer",
        /// More requests in flight than `max_inflight_requests`.
        TooManyInflight = 12 => "too_many_inflight",
        /// A Request named a handler method that does not exist.
        UnknownMethod = 13 => "unknown_method",
        /// The handler refused or failed the request.
        HandlerFailed = 14 => "handler_failed",
        /// The server holds its configured maximum of connections.
        ServerFull = 15 => "server_full",
        /// No Hello within `hello_timeout_ms`.
        HelloTimeout = 16 => "hello_timeout",
        /// No frame within `heartbeat_timeout_ms`.
        HeartbeatTimeout = 17 => "heartbeat_timeout",
        /// A limit other than frame size was exceeded (e.g. too many topics).
        LimitExceeded = 18 => "limit_exceeded",
        /// The server is shutting down.
        ShuttingDown = 19 => "shutting_down",
        /// Something the request needs did not answer in time (a publish the cluster stream
        /// did not confirm); retry (a publish retried with its `msg_id` is stored once).
        Unavailable = 20 => "unavailable",
    }
}
