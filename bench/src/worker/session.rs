//! One client session: its socket, state, decoder, outbound bytes and in-flight requests, and
//! what each received frame means for the counters.

use std::collections::VecDeque;

use holdfast_protocol::{Decoder, ErrorCode, Frame, Kind, Payload};

use super::template::Template;
use crate::msg::Counters;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet, or waiting to reconnect.
    Idle,
    Connecting,
    /// Hello sent, Welcome awaited.
    Handshaking,
    Open,
    /// Closed for good (failed, or the run is over).
    Closed,
}

/// A request awaiting its reply: latency is measured from `origin_ns` (the send time in closed
/// loop, the intended send time in open loop).
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    pub id: u64,
    pub origin_ns: u64,
}

/// What the worker must do after a batch of frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameOutcome {
    /// Welcome received: the session just opened.
    pub opened: bool,
    /// Goodbye received: reconnect no sooner than this.
    pub goodbye_reconnect_after_ms: Option<u64>,
    /// Protocol violation or server error: close the session.
    pub close: bool,
    /// The Welcome's heartbeat interval.
    pub heartbeat_ms: Option<u64>,
    /// push: the Subscribe was answered (true: Ack, false: Error).
    pub subscribed: Option<bool>,
}

impl FrameOutcome {
    /// The frame changed the session's state: stop feeding and apply it before the next frame.
    pub fn changes_state(&self) -> bool {
        self.opened
            || self.close
            || self.goodbye_reconnect_after_ms.is_some()
            || self.subscribed.is_some()
    }
}

pub struct Session {
    /// The socket and its transport (tcp, tls, ws, wss).
    pub stream: Option<crate::transport::Conn>,
    pub state: State,
    /// Bumped on every connect attempt; timeouts carry it so a stale one is ignored.
    pub attempt: u32,
    pub connect_started_ns: u64,
    pub connected_ns: u64,
    /// `storm`: when this session was dropped (latency origin of its reconnect).
    pub dropped_ns: Option<u64>,
    pub decoder: Decoder,
    pub link: Link,
}

/// The parts of a session that frame handling touches (split from the decoder so both can be
/// borrowed at once).
pub struct Link {
    pub out: Vec<u8>,
    pub inflight: VecDeque<Inflight>,
    pub next_id: u64,
    /// Open loop: requests sent so far (the next one is this session's request number `sent_j`).
    pub sent_j: u64,
    /// Open loop: requests that fell due and wait for a free in-flight slot.
    pub owed: u64,
    pub last_tx_ns: u64,
    pub dirty: bool,
    /// Pong ids owed to the server's Pings.
    pub pongs_owed: Vec<u64>,
    /// push: the id of the Subscribe awaiting its Ack.
    pub subscribe_id: Option<u64>,
    pub subscribed: bool,
    /// push: seq of the first and the latest Push of the run's stream.
    pub first_seq: Option<u64>,
    pub last_seq: u64,
}

impl Session {
    pub fn new(max_frame_bytes: u32) -> Session {
        Session {
            stream: None,
            state: State::Idle,
            attempt: 0,
            connect_started_ns: 0,
            connected_ns: 0,
            dropped_ns: None,
            decoder: Decoder::new(max_frame_bytes),
            link: Link {
                out: Vec::new(),
                inflight: VecDeque::new(),
                next_id: 1,
                sent_j: 0,
                owed: 0,
                last_tx_ns: 0,
                dirty: false,
                pongs_owed: Vec::new(),
                subscribe_id: None,
                subscribed: false,
                first_seq: None,
                last_seq: 0,
            },
        }
    }
}

/// A completed request, to be recorded by the caller.
pub type Completed = Inflight;

impl Link {
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn take_inflight(&mut self, id: u64) -> Option<Inflight> {
        // Replies come back in order almost always: the front matches.
        let pos = self.inflight.iter().position(|r| r.id == id)?;
        self.inflight.remove(pos)
    }

    /// Accounts one received frame. Replies that completed a request are pushed to `completed`.
    pub fn on_frame(
        &mut self,
        frame: Frame<'_>,
        state: State,
        template: &Template,
        counters: &mut Counters,
        completed: &mut Vec<Completed>,
        outcome: &mut FrameOutcome,
    ) {
        let id = frame.header.id;
        match frame.payload {
            Payload::Welcome(welcome) if state == State::Handshaking => {
                outcome.opened = true;
                outcome.heartbeat_ms = Some(u64::from(welcome.heartbeat_ms.to_native()));
            }
            Payload::Ping => {
                counters.pings_received += 1;
                self.pongs_owed.push(id);
                self.dirty = true;
            }
            Payload::Pong => counters.pongs_received += 1,
            Payload::Ack if id != 0 && self.subscribe_id == Some(id) => {
                self.subscribe_id = None;
                outcome.subscribed = Some(true);
            }
            Payload::Error(_) if id != 0 && self.subscribe_id == Some(id) => {
                self.subscribe_id = None;
                outcome.subscribed = Some(false);
            }
            Payload::Push(push) if template.push_stream() == Some(&*push.topic) => {
                let seq = push.seq.to_native();
                counters.push_delivered += 1;
                if self.first_seq.is_none() {
                    self.first_seq = Some(seq);
                } else if seq <= self.last_seq {
                    counters.push_duplicates += 1;
                } else {
                    counters.push_gaps_between += seq - self.last_seq - 1;
                }
                self.last_seq = self.last_seq.max(seq);
                match template.push_timestamp(&push.payload) {
                    Some(sent_ns) => completed.push(Inflight {
                        id: seq,
                        origin_ns: sent_ns,
                    }),
                    None => counters.push_payload_mismatched += 1,
                }
            }
            Payload::Ack if template.kind() == Kind::Event => match self.take_inflight(id) {
                Some(event) => {
                    counters.replies_ok += 1;
                    completed.push(event);
                }
                None => unexpected(counters, frame.header.kind),
            },
            Payload::Echo(_) if template.kind() == Kind::Echo => match self.take_inflight(id) {
                Some(request) if template.echo_matches(id, frame.bytes) => {
                    counters.replies_ok += 1;
                    completed.push(request);
                }
                Some(_) => counters.replies_mismatched += 1,
                None => unexpected(counters, frame.header.kind),
            },
            Payload::Response(response) if template.kind() == Kind::Request => {
                match self.take_inflight(id) {
                    Some(request)
                        if !template.checks_response_body()
                            || template.body_matches(id, &response.body) =>
                    {
                        counters.replies_ok += 1;
                        completed.push(request);
                    }
                    Some(_) => counters.replies_mismatched += 1,
                    None => unexpected(counters, frame.header.kind),
                }
            }
            Payload::Error(error) => {
                let code = error.code.to_native();
                let name = ErrorCode::from_u16(code)
                    .map_or_else(|| format!("code_{code}"), |c| c.name().to_owned());
                if self.take_inflight(id).is_some() {
                    *counters.replies_error.entry(name).or_default() += 1;
                } else if template.kind() == Kind::Event && id != 0 && state == State::Open {
                    // An Event refused without an Ack asked for: the connection stays open.
                    *counters.events_refused.entry(name).or_default() += 1;
                } else {
                    *counters.errors_unsolicited.entry(name).or_default() += 1;
                    // An Error outside a request precedes the server's close.
                    outcome.close = true;
                }
            }
            Payload::Goodbye(goodbye) => {
                counters.goodbyes_received += 1;
                outcome.goodbye_reconnect_after_ms =
                    Some(u64::from(goodbye.reconnect_after_ms.to_native()));
            }
            _ => {
                unexpected(counters, frame.header.kind);
                if state == State::Handshaking {
                    outcome.close = true;
                }
            }
        }
    }
}

fn unexpected(counters: &mut Counters, kind: Kind) {
    *counters
        .frames_unexpected
        .entry(format!("{kind:?}"))
        .or_default() += 1;
}
