//! A shard's state: everything one core owns. No field is shared with another thread.

use std::collections::VecDeque;
use std::time::Instant;

use hdrhistogram::Histogram;
use holdfast_protocol::Decoder;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use socket2::Socket;

use crate::config::Config;
use crate::conn::{ConnFlags, ConnKey, ConnSlab, SessionState};
use crate::events::sink::EventSink;
use crate::handler::{Handler, Router, Session};
use crate::mesh::{Mesh, ShardReport};
use crate::metrics::log_limit::LogLimiter;
use crate::metrics::{CloseReason, ShardCounters};
use crate::outbound::OutboundPool;
use crate::push::state::PushState;
use crate::ring::set::RingSet;
use crate::ring::user_data::{Op, UserData};
use crate::ring::{Completion, RingParams};
use crate::session::{SessionCx, SessionLimits};
use crate::timer::wheel::TimerWheel;
use crate::transport::{Transport, TransportConfig, WsConfig};

use super::transport::LISTENER_COUNT;

/// Upper bound of latency histograms: 60 s in us.
pub(crate) const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Decoders kept for reuse per shard.
pub(crate) const DECODER_POOL_MAX_ITEMS: usize = 1024;
/// A pooled decoder keeps at most this much buffer capacity.
pub(crate) const DECODER_POOL_KEEP_BYTES: usize = 4 * 1024;

/// One-shot accepts each listener keeps pending in a shard of several rings, each naming its
/// free slot: enough that a connect burst is not served one accept per ring turn.
pub(crate) const SLOT_ACCEPTS_PER_LISTENER: u32 = 128;

/// Accepts into named slots, for a shard of several rings (`ring::set`): the slots free to
/// name and the accepts pending per listener. A slot is free once its close completed (the
/// kernel has emptied the table entry) and no pending accept names it.
pub(super) struct SlotAccepts {
    /// Popped from the end: the lowest slots first, then the most recently freed.
    pub(super) free: Vec<u32>,
    pub(super) pending: [u32; LISTENER_COUNT],
}

/// One ring's receive buffers in use: at most one recv per provided buffer is in flight on
/// a ring, so a burst of readiness never turns into a storm of ENOBUFS completions; the
/// connections that found them all taken wait in a FIFO.
#[derive(Default)]
pub(super) struct RecvBudget {
    /// Recvs submitted and not yet completed (<= recv_buffers - multishot).
    pub(super) in_flight: u32,
    /// Multishot recvs on this ring (each may hold a buffer at any moment; <= half).
    pub(super) multishot: u32,
    pub(super) waiters: VecDeque<ConnKey>,
}

/// Timer wheel deadlines, in ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TickLimits {
    pub tick_ms: u64,
    pub hello: u32,
    pub heartbeat_interval: u32,
    /// The shortest interval a Hello may agree: the first timer entry of a connection is due
    /// no later than this, so it is never late for a session that agrees a short interval.
    pub heartbeat_min_interval: u32,
    pub heartbeat_timeout: u32,
    pub linger: u32,
    pub drain: u32,
    /// frame_timeout_ms: the most a frame in progress may take to complete.
    pub frame: u32,
}

pub(crate) struct Shard {
    /// The shard's rings and their receive buffers (each ring dropped before its buffers).
    /// Speaks shard slots; one ring unless the connection budget passes the per-ring cap.
    pub(super) ring: RingSet,
    pub(super) index: usize,
    pub(super) config: Config,
    pub(super) limits: SessionLimits,
    pub(super) ticks: TickLimits,
    /// The listeners, indexed as [`super::transport::listener_kind`] reads them: plain TCP,
    /// WebSocket (`ws_listen`), TLS (`tls_listen`). An accept's user_data carries the index in
    /// its slot field (multishot), or in its generation bits (an accept into a named slot).
    pub(super) listeners: [Option<Socket>; LISTENER_COUNT],
    /// One ring: which listener's multishot accept is pending.
    pub(super) accept_armed: [bool; LISTENER_COUNT],
    /// Several rings: accepts into named slots instead (`None` with one ring).
    pub(super) slot_accepts: Option<SlotAccepts>,
    /// Transport state of the connections that have one (WebSocket, TLS), by slot: a side table,
    /// so a plain connection's slot stays 32 bytes and pays nothing (its `Conn::transport`
    /// byte says there is nothing to look up). Removed when the slot is freed.
    pub(super) transports: std::collections::HashMap<u32, Transport>,
    pub(super) transport_config: TransportConfig,
    /// The TLS listener's certificate (`tls_listen`), re-read by new handshakes after a reload.
    pub(super) tls_config: Option<crate::transport::tls::TlsConfigCache>,
    /// Slots for sessions (max_connections_per_shard) and, beyond them, refusal slots.
    pub(super) conns: ConnSlab,
    /// max_connections_per_shard: a connection accepted beyond it is refused (server_full).
    pub(super) max_sessions: u32,
    /// Live connections in refusal slots (flag REFUSED): not sessions, not counted against
    /// max_sessions.
    pub(super) refusals_live: u32,
    pub(super) wheel: TimerWheel<ConnKey>,
    /// Sessions the wheel found due for a heartbeat Ping (flag PINGED set), sent by the ring
    /// loop HEARTBEAT_PINGS_PER_ROUND_MAX per round (`Shard::send_due_pings`). At most one
    /// entry per live connection per heartbeat interval; stale entries (closed, or active
    /// since) are skipped when popped.
    pub(super) pings_due: VecDeque<ConnKey>,
    // Boxed on purpose: a decoder moves between this pool and a connection slot, where
    // `Option<Box<Decoder>>` keeps the slot at 32 bytes.
    #[allow(clippy::vec_box)]
    pub(super) decoders: Vec<Box<Decoder>>,
    pub(super) outbound_pool: OutboundPool,
    /// Bytes of incomplete frames held by this shard's connections (decoders in slots), at
    /// most max_partial_frame_bytes_per_shard.
    pub(super) partial_frame_bytes: u64,
    /// Connections holding a partial frame, and when it began (frame_timeout_ms).
    pub(super) frame_started: std::collections::HashMap<u32, super::frame_timeout::FrameStarted>,
    /// One entry per connection in `frame_started`: its frame deadline.
    pub(super) frame_wheel: TimerWheel<ConnKey>,
    pub(super) handler: Router,
    pub(super) counters: ShardCounters,
    /// From receiving the bytes that caused a reply to the kernel taking the reply, in us.
    pub(super) reply_latency_us: Histogram<u64>,
    pub(super) completions: Vec<Completion>,
    /// When the current round of completions was reaped: the receive time of the bytes and
    /// the completion time of the sends in it (one clock read per round, not per completion).
    pub(super) reaped_at: Instant,
    /// Provided buffers of each ring (`Config::recv_buffers_per_ring`): the most recvs each
    /// ring keeps in flight, multishot recvs included.
    pub(super) recv_buffers: u32,
    /// Per ring: recvs in flight, multishot recvs, connections waiting for a buffer.
    pub(super) recv_budgets: Vec<RecvBudget>,
    /// Connections that may read through a multishot recv (multishot_recv_max_per_shard; on
    /// each ring also at most half its buffers, `RecvBudget::multishot`).
    pub(super) multishot_recv_max: u32,
    /// Connections reading through a multishot recv (<= multishot_recv_max).
    pub(super) multishot_recvs: u32,
    /// Bytes read from connections whose events are parked, not yet decoded, by slot (with
    /// the connection's generation). At most one receive buffer's worth per paused
    /// connection, plus what a multishot recv read before its cancel landed.
    pub(super) held_input: std::collections::HashMap<u32, (u32, bytes::BytesMut)>,
    /// Set when draining: the tick by which every connection is closed.
    pub(super) drain_deadline_tick: Option<u32>,
    /// The tick at which the shard next gives back what its queues grew in a burst
    /// (`shard/trim.rs`, every TRIM_INTERVAL_MS).
    pub(super) next_trim_tick: u32,
    pub(super) started_at: Instant,
    pub(super) rng: SmallRng,
    pub(super) log_socket_errors: LogLimiter,
    pub(super) log_protocol_errors: LogLimiter,
    pub(super) log_accept_errors: LogLimiter,
    pub(super) log_cross_shard: LogLimiter,
    /// Topics, client directory, sequences, event pipeline, messages for other shards.
    pub(super) push: PushState,
    /// Every shard's inbox (given at spawn, before the first accept); counts what full
    /// inboxes refused.
    pub(super) mesh: Mesh,
    /// A read of this shard's doorbell is in the ring (`Shard::arm_doorbell`): an inbox
    /// message ends a wait in the ring, so the shard may wait there up to a tick.
    pub(super) doorbell_reading: bool,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        config: Config,
        listeners: [Option<Socket>; LISTENER_COUNT],
        tls_config: Option<std::sync::Arc<crate::transport::tls::TlsConfigSource>>,
        capacity: u32,
        mesh: Mesh,
        events: flume::Sender<crate::events::OwnedEvent>,
    ) -> std::io::Result<Shard> {
        // Sessions up to `capacity`, plus the slots that refuse connections over it, in as many
        // rings as tables of ring_table_slots() need.
        let slots = capacity + config.refusal_slots_per_shard();
        let table_slots = config.ring_table_slots();
        // Each ring its share of the shard's queue entries and receive buffers.
        let rings = crate::ring::set::rings_needed(u64::from(slots), u64::from(table_slots));
        let (sq_entries, cq_entries) = config.ring_entries_for_rings(rings);
        let params = RingParams {
            sq_entries,
            cq_entries,
            fixed_files: slots,
            recv_buffers: config.recv_buffers_for_rings(rings),
            recv_buffer_bytes: config.recv_buffer_bytes,
        };
        let shards = mesh.shards();
        let config_policy = config.event_overflow_policy;
        let push_limits = crate::push::state::PushLimits::from_config(&config);
        let config_parked_max = config.event_parked_max;
        let ring = RingSet::new(&params, slots, table_slots)?;
        let multishot_recv_max = config.multishot_recv_max_per_shard;
        let ring_count = ring.ring_count();
        let transport_config = TransportConfig {
            ws: WsConfig {
                path: config.ws_path.clone(),
                allowed_origins: config.ws_allowed_origins.clone(),
                max_message_bytes: config.max_frame_bytes,
            },
        };
        let limits = SessionLimits {
            max_frame_bytes: config.max_frame_bytes,
            max_outbound_bytes: config.max_outbound_bytes as usize,
            max_inflight_requests: config.max_inflight_requests as u16,
            heartbeat_interval_ms: config.heartbeat_interval_ms as u32,
            heartbeat_min_interval_ms: config.heartbeat_min_interval_ms as u32,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms as u32,
            timer_tick_ms: config.timer_tick_ms as u32,
            auth_secret: config.auth_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            publisher_client_id_prefix: config.publisher_client_id_prefix.clone(),
        };
        let ticks = TickLimits {
            tick_ms: config.timer_tick_ms,
            hello: config.heartbeat_ticks(config.hello_timeout_ms),
            heartbeat_interval: config.heartbeat_ticks(config.heartbeat_interval_ms),
            heartbeat_min_interval: config.heartbeat_ticks(config.heartbeat_min_interval_ms),
            heartbeat_timeout: config.heartbeat_ticks(config.heartbeat_timeout_ms),
            linger: config.heartbeat_ticks(config.close_linger_ms),
            drain: config.heartbeat_ticks(config.drain_timeout_ms),
            frame: config.heartbeat_ticks(config.frame_timeout_ms),
        };
        Ok(Shard {
            ring,
            index,
            config,
            limits,
            ticks,
            transport_config,
            tls_config: tls_config.map(crate::transport::tls::TlsConfigCache::new),
            listeners,
            accept_armed: [false; LISTENER_COUNT],
            slot_accepts: (ring_count > 1).then(|| SlotAccepts {
                free: (0..slots).rev().collect(),
                pending: [0; LISTENER_COUNT],
            }),
            transports: std::collections::HashMap::new(),
            conns: ConnSlab::new(slots),
            max_sessions: capacity,
            refusals_live: 0,
            wheel: TimerWheel::new(),
            pings_due: VecDeque::new(),
            decoders: Vec::new(),
            outbound_pool: OutboundPool::default(),
            partial_frame_bytes: 0,
            frame_started: std::collections::HashMap::new(),
            frame_wheel: TimerWheel::new(),
            handler: Router::default(),
            counters: ShardCounters::default(),
            reply_latency_us: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
                .expect("static bounds"),
            completions: Vec::with_capacity(1024),
            reaped_at: Instant::now(),
            recv_budgets: (0..ring_count).map(|_| RecvBudget::default()).collect(),
            recv_buffers: u32::from(params.recv_buffers),
            multishot_recv_max,
            multishot_recvs: 0,
            held_input: std::collections::HashMap::new(),
            drain_deadline_tick: None,
            next_trim_tick: 0,
            started_at: Instant::now(),
            rng: SmallRng::from_entropy(),
            log_socket_errors: LogLimiter::default(),
            log_protocol_errors: LogLimiter::default(),
            log_accept_errors: LogLimiter::default(),
            log_cross_shard: LogLimiter::default(),
            push: PushState::new(
                EventSink::new(events, config_policy, config_parked_max),
                shards,
                push_limits,
            ),
            mesh,
            doorbell_reading: false,
        })
    }

    /// The current tick: the wheel's, or the clock's at the last reap if the ticker lags
    /// behind it (a loaded host). Deadlines are counted from here, so a late ticker never
    /// makes a new deadline early (a hello_timeout_ms of 300 fired after ~100 ms under load).
    pub(crate) fn now_tick(&self) -> u32 {
        let since_start = self.reaped_at.saturating_duration_since(self.started_at);
        let clock_tick = (since_start.as_millis() as u64 / self.ticks.tick_ms) as u32;
        self.wheel.now_tick().max(clock_tick)
    }

    /// The connection slab and what the session layer may touch besides it.
    pub(super) fn session_parts(&mut self, slot: u32) -> (&mut ConnSlab, SessionCx<'_>) {
        split_for_session(
            &mut self.conns,
            &mut self.handler,
            &mut self.counters,
            &mut self.outbound_pool,
            &self.limits,
            &mut self.push,
            self.index,
            slot,
            Instant::now(),
        )
    }

    /// Keeps each listener accepting unless the shard drains: one ring, a multishot accept
    /// (the kernel picks the table entry); several rings, up to SLOT_ACCEPTS_PER_LISTENER
    /// one-shot accepts, each naming a free slot (the slot's ring takes the connection).
    pub(super) fn arm_accept(&mut self) {
        if self.drain_deadline_tick.is_some() {
            return;
        }
        // Armed even when every session slot is taken: a connection over the cap is refused
        // (told in a refusal slot, or, with one ring, closed by the kernel at accept with
        // ENFILE). With several rings and no free slot, connections wait in the listen queue
        // until a close completes.
        for index in 0..LISTENER_COUNT {
            let Some(listener) = self.listeners[index].as_ref() else {
                continue;
            };
            use std::os::fd::AsRawFd;
            let fd = listener.as_raw_fd();
            let Some(accepts) = self.slot_accepts.as_mut() else {
                if !self.accept_armed[index] {
                    self.ring
                        .accept_multishot(fd, UserData::new(Op::Accept, index as u32, 0));
                    self.accept_armed[index] = true;
                }
                continue;
            };
            while accepts.pending[index] < SLOT_ACCEPTS_PER_LISTENER {
                let Some(slot) = accepts.free.pop() else {
                    break;
                };
                accepts.pending[index] += 1;
                self.ring
                    .accept_into(fd, slot, UserData::new(Op::AcceptSlot, slot, index as u32));
            }
        }
    }

    /// Sends whatever the connection has queued, if no send is in flight. Returns an idle
    /// queue to the pool.
    pub(super) fn flush(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        let ud = UserData::new(Op::Send, slot, conn.generation);
        if conn.flags.has(ConnFlags::SEND_IN_FLIGHT) {
            return;
        }
        if conn.transport != crate::transport::TransportKind::Plain {
            return self.flush_transport(slot);
        }
        if let Some(out) = conn.outbound.as_mut() {
            if let Some(batch) = out.take_batch() {
                conn.flags.set(ConnFlags::SEND_IN_FLIGHT);
                self.ring.send(slot, ud, batch);
                return;
            }
            if out.is_idle() {
                conn.inflight_requests = 0;
                let idle = conn.outbound.take().expect("checked above");
                self.outbound_pool.give(idle);
            }
        }
        // Nothing left to send (or nothing was queued, e.g. after the peer's Goodbye).
        if conn.outbound.is_none() && conn.state == SessionState::Closing {
            self.after_final_flush(slot);
        }
    }

    /// A closing connection has nothing left to send: shut the write side so the peer sees
    /// EOF after our last bytes; close at once if the peer already sent its EOF.
    pub(super) fn after_final_flush(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        let ud = UserData::new(Op::Shutdown, slot, conn.generation);
        if conn.flags.has(ConnFlags::PEER_EOF) {
            self.close_now(slot, None);
            return;
        }
        if !conn.flags.has(ConnFlags::WRITE_SHUT) {
            conn.flags.set(ConnFlags::WRITE_SHUT);
            self.ring.shutdown_write(slot, ud);
        }
    }

    /// Graceful close: whatever is queued (an Error, a Goodbye) is flushed, the write side is
    /// shut, and the slot is freed on the peer's EOF or after close_linger_ms.
    pub(super) fn begin_close(&mut self, slot: u32, reason: CloseReason) {
        let now = self.now_tick();
        let linger = self.ticks.linger;
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        if conn.state == SessionState::Closing {
            return;
        }
        conn.state = SessionState::Closing;
        conn.last_activity_tick = now;
        tracing::debug!(shard = self.index, slot, ?reason, "closing");
        if let Some(decoder) = conn.decoder.take() {
            self.partial_frame_bytes -= decoder.buffered_bytes() as u64;
            self.give_decoder(decoder);
        }
        self.counters.closed(reason);
        self.wheel.insert(self.conns.key(slot), now + linger);
        self.close_transport(slot, reason);
        self.flush(slot);
    }

    /// Frees the slot now: cancels its requests and closes its descriptor. `reason` is counted
    /// unless the close was already counted by [`Shard::begin_close`].
    pub(super) fn close_now(&mut self, slot: u32, reason: Option<CloseReason>) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        let key = ConnKey {
            slot,
            generation: conn.generation,
        };
        let session = Session {
            id: key.id(self.index),
        };
        // Reads are armed for as long as the connection is open: a multishot poll, or a
        // multishot recv in its place on a busy connection. A recv or send is pending only
        // while its flag is set. Naming each exactly keeps the cancel a hashed lookup; one
        // that already completed fails with ENOENT, which is harmless.
        let reads = if conn.flags.has(ConnFlags::MULTISHOT_RECV) {
            self.multishot_recvs -= 1;
            self.recv_budgets[self.ring.ring_of(slot)].multishot -= 1;
            Op::RecvMulti
        } else {
            Op::Poll
        };
        let mut targets = [key.user_data(reads); 3];
        let mut target_count = 1;
        for (flag, op) in [
            (ConnFlags::RECV_IN_FLIGHT, Op::Recv),
            (ConnFlags::SEND_IN_FLIGHT, Op::Send),
        ] {
            if conn.flags.has(flag) {
                targets[target_count] = key.user_data(op);
                target_count += 1;
            }
        }
        tracing::debug!(shard = self.index, slot, ?reason, "closed");
        if let Some(reason) = reason {
            debug_assert_ne!(conn.state, SessionState::Closing);
            self.counters.closed(reason);
        }
        if conn.flags.has(ConnFlags::REFUSED) {
            self.refusals_live -= 1;
        }
        self.push.topics.remove_conn(key);
        self.push.resumes.remove_conn(key);
        self.push.broadcasts.remove_conn(key);
        self.held_input.remove(&slot);
        self.frame_started.remove(&slot);
        self.transports.remove(&slot);
        // Never acked, so not accepted: dropped with their connection (counted).
        self.counters.events_dropped += u64::from(self.push.events.drop_conn(session.id));
        if let Some((generation, client_id)) = self.push.client_ids.remove(&slot) {
            debug_assert_eq!(generation, key.generation);
            let owner = crate::mesh::owner_shard(&client_id, self.push.shards);
            let message = crate::mesh::ShardMsg::ClientUnregister {
                client_id,
                conn: session.id,
            };
            self.push.outbox.push((owner, message));
        }
        let (decoder, outbound) = self.conns.free(slot);
        if let Some(decoder) = decoder {
            self.partial_frame_bytes -= decoder.buffered_bytes() as u64;
            self.give_decoder(decoder);
        }
        if let Some(outbound) = outbound {
            if outbound.is_idle() {
                self.outbound_pool.give(outbound);
            }
        }
        self.ring.cancel_and_close(
            slot,
            &targets[..target_count],
            key.user_data(Op::Cancel),
            key.user_data(Op::Close),
        );
        self.handler.on_close(session);
        self.arm_accept();
    }

    pub(super) fn take_decoder(&mut self) -> Box<Decoder> {
        let max = self.limits.max_frame_bytes;
        self.decoders
            .pop()
            .unwrap_or_else(|| Box::new(Decoder::new(max)))
    }

    pub(super) fn give_decoder(&mut self, mut decoder: Box<Decoder>) {
        if self.decoders.len() < DECODER_POOL_MAX_ITEMS {
            decoder.reset(DECODER_POOL_KEEP_BYTES);
            self.decoders.push(decoder);
        }
    }

    /// Snapshot of this shard's counters.
    pub(crate) fn counters(&self) -> ShardCounters {
        let mut counters = self.counters.clone();
        counters.open = self.conns.open_count() as u64;
        counters.cross_shard_dropped = self.mesh.dropped_count();
        counters
    }

    /// Snapshot of this shard's counters and histograms, sent to whoever asked.
    pub(crate) fn report(&self) -> ShardReport {
        ShardReport {
            index: self.index,
            counters: self.counters(),
            reply_latency_us: self.reply_latency_us.clone(),
            draining: self.drain_deadline_tick.is_some(),
        }
    }
}

/// Borrows the pieces of a shard that the session layer touches, leaving the ring and the
/// receive buffers free for the caller. One parameter per disjoint field borrow (plus the
/// session's address and when its bytes were received): that is the point of this function,
/// so the argument count is allowed.
#[allow(clippy::too_many_arguments)]
pub(super) fn split_for_session<'a>(
    conns: &'a mut ConnSlab,
    handler: &'a mut Router,
    counters: &'a mut ShardCounters,
    pool: &'a mut OutboundPool,
    limits: &'a SessionLimits,
    push: &'a mut PushState,
    shard: usize,
    slot: u32,
    received_at: Instant,
) -> (&'a mut ConnSlab, SessionCx<'a>) {
    let cx = SessionCx {
        limits,
        handler,
        counters,
        pool,
        shard,
        slot,
        received_at,
        push,
    };
    (conns, cx)
}
