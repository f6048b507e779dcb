//! Payload layouts. Every kind but Echo carries an rkyv archive of one of these structs (Ping,
//! Pong and Ack carry none: their payload is empty). Encode-side structs borrow their strings
//! and bytes (`InlineAsBox`), so encoding copies caller data straight into the frame; the
//! decode side reads the `*View` types in place from the receive buffer after validation.
//!
//! rkyv is built with `unaligned` + `little_endian` + `pointer_width_32`: archived fields have
//! alignment 1, so a payload can be validated at any offset of a receive buffer and frames need
//! no padding (see docs/PROTOCOL.md, "Alignment").

use rkyv::{with::InlineAsBox, Archive, Serialize};

use crate::header::Kind;

/// A payload layout and the one frame kind that carries it: the encoder takes the kind from
/// here, so a frame's kind always matches its payload.
pub trait FramePayload {
    const KIND: Kind;
}

macro_rules! frame_payloads {
    ($( $payload:ident => $kind:ident, )+) => {
        $( impl FramePayload for $payload<'_> { const KIND: Kind = Kind::$kind; } )+
    };
}

frame_payloads! {
    Hello => Hello,
    Request => Request,
    Response => Response,
    Event => Event,
    Push => Push,
    Subscribe => Subscribe,
    Unsubscribe => Unsubscribe,
    ErrorBody => Error,
    Goodbye => Goodbye,
}

impl FramePayload for Welcome {
    const KIND: Kind = Kind::Welcome;
}

/// Client's opening frame (a Hello with an empty payload is an anonymous Hello).
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Hello<'a> {
    /// Client identity, at most [`MAX_CLIENT_ID_BYTES`].
    #[rkyv(with = InlineAsBox)]
    pub client_id: &'a str,
    /// Auth token (see [`crate::token`]); empty when auth is off.
    #[rkyv(with = InlineAsBox)]
    pub token: &'a [u8],
    /// Protocol versions the client speaks.
    #[rkyv(with = InlineAsBox)]
    pub versions: &'a [u8],
    /// Heartbeat interval the client asks for; the server clamps it.
    pub heartbeat_ms: u32,
}

/// Server's answer to a Hello: the session is open.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Generational connection id: shard, slot and generation.
    pub session_id: u64,
    /// Heartbeat interval in force; the server closes after `heartbeat_timeout_ms` of silence.
    pub heartbeat_ms: u32,
    pub heartbeat_timeout_ms: u32,
    pub max_frame_bytes: u32,
    pub max_inflight_requests: u32,
}

/// A call to a named handler method.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Request<'a> {
    #[rkyv(with = InlineAsBox)]
    pub method: &'a str,
    #[rkyv(with = InlineAsBox)]
    pub body: &'a [u8],
}

/// The answer to a Request (same id). Failures come back as Error frames with the same id.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Response<'a> {
    #[rkyv(with = InlineAsBox)]
    pub body: &'a [u8],
}

/// Something the client reports.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Event<'a> {
    #[rkyv(with = InlineAsBox)]
    pub topic: &'a str,
    #[rkyv(with = InlineAsBox)]
    pub payload: &'a [u8],
}

/// A message pushed by the server.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Push<'a> {
    #[rkyv(with = InlineAsBox)]
    pub topic: &'a str,
    /// Per-topic sequence number; a gap tells the client it missed messages.
    pub seq: u64,
    #[rkyv(with = InlineAsBox)]
    pub payload: &'a [u8],
}

/// The layout of Subscribe and Unsubscribe payloads as they are read ([`TopicsView`]): the
/// topics to add or remove. Encode with [`Subscribe`] or [`Unsubscribe`], which archive to the
/// same bytes and name their kind.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Topics<'a> {
    #[rkyv(with = InlineAsBox)]
    pub topics: &'a [TopicName<'a>],
}

/// A Subscribe payload (same layout as [`Topics`]).
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Subscribe<'a> {
    #[rkyv(with = InlineAsBox)]
    pub topics: &'a [TopicName<'a>],
}

/// An Unsubscribe payload (same layout as [`Topics`]).
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Unsubscribe<'a> {
    #[rkyv(with = InlineAsBox)]
    pub topics: &'a [TopicName<'a>],
}

/// One topic name inside [`Topics`].
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct TopicName<'a> {
    #[rkyv(with = InlineAsBox)]
    pub name: &'a str,
}

/// An error report: a stable code (see [`crate::ErrorCode`]) and a short reason.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct ErrorBody<'a> {
    pub code: u16,
    #[rkyv(with = InlineAsBox)]
    pub reason: &'a str,
}

/// The server is closing the session; reconnect no sooner than `reconnect_after_ms`.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
pub struct Goodbye<'a> {
    #[rkyv(with = InlineAsBox)]
    pub reason: &'a str,
    pub reconnect_after_ms: u32,
}

/// Upper bound on a Hello's client id.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

pub type HelloView = ArchivedHello<'static>;
pub type WelcomeView = ArchivedWelcome;
pub type RequestView = ArchivedRequest<'static>;
pub type ResponseView = ArchivedResponse<'static>;
pub type EventView = ArchivedEvent<'static>;
pub type PushView = ArchivedPush<'static>;
pub type TopicsView = ArchivedTopics<'static>;
pub type ErrorView = ArchivedErrorBody<'static>;
pub type GoodbyeView = ArchivedGoodbye<'static>;
