//! An async client for the Holdfast gateway, on tokio.
//!
//! It keeps one session open for you and does what every well-behaved Holdfast client has to:
//!
//! - **Connects** over TCP and says Hello, with a token when the server has auth on
//!   ([`TokenSource`]; [`mint_token`] makes one the way the server checks it).
//! - **Heartbeats** at the interval the Welcome gives: answers the server's Pings, pings after
//!   that much silence, and treats a server silent for the Welcome's `heartbeat_timeout_ms` as
//!   dead.
//! - **Reconnects** when the connection is lost, with exponential backoff and full jitter
//!   ([`Backoff`]); after a Goodbye (a server draining) it waits exactly the server's
//!   `reconnect_after_ms` first (up to [`ClientConfig::reconnect_after_max_ms`]). Watch it
//!   happen with [`Client::watch_state`].
//! - **Resumes** every topic after a reconnect: it remembers per topic the server's epoch and
//!   the last sequence number delivered ([`Client::subscriptions`]) and subscribes again with
//!   them (SubscribeResume), so the server replays what was published meanwhile. A server
//!   from before resume (it refuses kind 15 as an unknown kind) gets plain Subscribe instead,
//!   and what was missed is reported as a [`Gap`] before the next push
//!   ([`Stats::resume_fallbacks`]).
//! - **Requests** are futures with a timeout; no more are put on the wire than the Welcome
//!   allows in flight, and at most [`ClientConfig::max_inflight_requests`] wait at once.
//! - **Publishes** from a publisher session ([`Client::publish`]) are answered with their
//!   outcome: the topic's sequence number, or the connections reached.
//! - **Events** are acked ([`Client::event`]) or fire-and-forget ([`Client::event_unacked`]).
//! - **Pushes** arrive on a [`PushStream`], in order, with a [`Gap`] report in front of any
//!   push whose topic skipped sequence numbers.
//! - **Errors** are typed ([`Error`]): one variant per class of the protocol's error codes,
//!   plus transport, timeout, lost and closed.
//!
//! # Example
//!
//! ```no_run
//! use holdfast_client::{Client, ClientConfig, Gap, Incoming};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), holdfast_client::Error> {
//!     let config = ClientConfig::tcp("127.0.0.1:7878").with_client_id("device-1");
//!     let (client, mut pushes) = Client::connect(config).await?;
//!
//!     let answer = client.request("echo", "hello").await?;
//!     assert_eq!(&answer[..], b"hello");
//!     client.event("clicks", "item-42").await?; // Ok once the server has it
//!
//!     client.subscribe(["news"]).await?;
//!     while let Some(item) = pushes.recv().await {
//!         match item {
//!             Incoming::Push(push) => {
//!                 println!("{} #{}: {:?}", push.topic, push.seq, push.payload)
//!             }
//!             Incoming::Gap(Gap::Missed { topic, first_missed_seq, last_missed_seq, .. }) => {
//!                 println!("missed {topic} #{first_missed_seq}..=#{last_missed_seq}: re-fetch it")
//!             }
//!             Incoming::Gap(gap) => println!("{} was renumbered: re-fetch it", gap.topic()),
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Delivery, from your side
//!
//! The server numbers each topic's pushes 1, 2, 3, … within an epoch (a server restart
//! starts new epochs) and keeps the last ones per topic (its `history_max_*` window). When
//! your client reconnects (after a drain, a network blip), it sends each topic's epoch and
//! last delivered sequence number; what was published meanwhile is replayed and arrives on
//! the [`PushStream`] like live pushes, in order, each once, with no gap report. When the
//! server cannot replay it, the client tells you as soon as the server answers, before any
//! push that follows: [`Gap::Missed`] naming the lost range (you were away longer than the
//! window, or the server has history off), or [`Gap::Reset`] when the topic is in a new epoch
//! (the server restarted and lost its history, so what was missed of the old epoch is
//! unknown). On either, re-fetch whatever state those pushes keep current. After a
//! [`Gap::Reset`] with `received_seq` 1, the server still holds everything it published since
//! it restarted: those pushes follow from seq 1, in order, so a drain and restart within the
//! window loses nothing published after the restart, and a draining server refuses publishes
//! (503) rather than accept them. Pushes the old server had accepted before its drain but not
//! yet sent to this session are gone with its history: the reset is the cue to re-fetch.
//! Subscribing to `*` makes broadcasts resume too. A server too busy to look a topic up
//! in time answers its resume "unknown" (epoch 0): the client asks again and drops that
//! topic's pushes until the answer, which replays them, so none arrives twice
//! ([`Stats::pushes_awaiting_resume`]).
//!
//! Behind a load balancer in front of several hosts, run the servers with
//! `cluster_mode = "jetstream"`: a topic then has one epoch and one sequence on every host, so
//! a client drained off one host (it follows the Goodbye and the balancer sends it to another)
//! resumes there exactly as on the same host: each push once, in order, nothing lost. In the
//! default core NATS mode each host numbers topics on its own, and a reconnect to another
//! host shows as a [`Gap::Reset`].
//!
//! If you do not read the [`PushStream`] and it fills up
//! ([`ClientConfig::push_buffer_max_items`]), arriving pushes are dropped here and counted
//! ([`Stats::pushes_dropped`]); requests, events and heartbeats are unaffected, and the drops
//! show up as a [`Gap::Missed`] (with `dropped_here`) once you read again.
//!
//! # Transports
//!
//! One [`Endpoint`] variant per server listener, each with a [`ClientConfig`] constructor:
//!
//! - [`ClientConfig::tcp`]: plain TCP (`listen`).
//! - [`ClientConfig::tls`]: frames inside TLS (`tls_listen`, ALPN `holdfast/1`), the server's
//!   certificate checked against a [`TlsTrust`] (rustls with ring).
//! - [`ClientConfig::websocket`]: WebSocket (`ws_listen` and its `ws_path`), subprotocol
//!   `holdfast.v1`, frames in binary messages.
//! - [`ClientConfig::wss`]: WebSocket inside TLS (`tls_listen`, ALPN `http/1.1`).
//!
//! Reconnecting, resuming, requests and events behave the same on every transport.
//!
//! # Limits
//!
//! Every limit is a [`ClientConfig`] field with its unit in its name, defaulting to a named
//! constant (`*_DEFAULT`); [`WRITE_BUFFER_MAX_BYTES`], [`READ_CHUNK_BYTES`],
//! [`COMMANDS_PER_WAKE_MAX`] and [`HEARTBEAT_MIN_MS`] are fixed.

#![warn(missing_docs)]

mod backoff;
mod client;
mod config;
mod driver;
mod error;
mod frames;
mod publish;
mod pushes;
mod seq;
mod state;
mod tls;
mod token;
mod transport;
mod websocket;

pub use backoff::Backoff;
pub use client::Client;
pub use config::{
    ClientConfig, Endpoint, TlsOptions, TokenFn, TokenSource, CLOSE_FLUSH_TIMEOUT_MS_DEFAULT,
    COMMAND_QUEUE_MAX_ITEMS_DEFAULT, CONNECT_TIMEOUT_MS_DEFAULT, HELLO_TIMEOUT_MS_DEFAULT,
    MAX_INFLIGHT_ACKS_DEFAULT, MAX_INFLIGHT_REQUESTS_DEFAULT, MAX_TOPICS_DEFAULT,
    PUSH_BUFFER_MAX_ITEMS_DEFAULT, RECONNECT_AFTER_MAX_MS_DEFAULT, RECONNECT_BASE_DELAY_MS_DEFAULT,
    RECONNECT_MAX_DELAY_MS_DEFAULT, REQUEST_TIMEOUT_MS_DEFAULT,
};
pub use driver::{
    COMMANDS_PER_WAKE_MAX, HEARTBEAT_MIN_MS, READ_CHUNK_BYTES, WRITE_BUFFER_MAX_BYTES,
};
pub use error::{Error, ServerError};
pub use holdfast_protocol::ErrorCode;
pub use publish::{PublishTarget, Published, PUBLISH_MSG_ID_MAX_BYTES};
pub use pushes::{Incoming, Push, PushStream};
pub use seq::Gap;
pub use state::{ConnectionState, SessionInfo, Stats};
pub use tls::{TlsTrust, ALPN_HOLDFAST, ALPN_HTTP1};
pub use token::{mint_token, TOKEN_BYTES};
/// The rustls this crate uses, to build a [`rustls::RootCertStore`] for [`TlsTrust`].
pub use tokio_rustls::rustls;
pub use websocket::{SUBPROTOCOL, WS_MESSAGE_MAX_BYTES};
