//! Completions, in data-path order: accept -> poll -> recv (bytes -> frames -> session) ->
//! send. Each handler checks the completion's generation against its slot first: a completion
//! of a closed connection is dropped (its receive buffer still goes back to the ring).
//!
//! Reads come one of two ways. An idle connection holds a multishot poll (~256 bytes of
//! kernel memory); readiness issues a one-shot recv with a provided buffer. A connection that
//! sends again within a timer tick of its last frame swaps the poll for a multishot recv
//! (one ring operation per arrival instead of three), up to multishot_recv_max_per_shard per
//! shard, and swaps back once silent for heartbeat_interval_ms, when the buffer ring runs
//! dry, or when its events are parked (backpressure).

use bytes::{Buf, BytesMut};
use holdfast_protocol::decode::Fed;

use crate::conn::{ConnFlags, ConnKey, SessionState};
use crate::metrics::CloseReason;
use crate::ring::user_data::{Op, UserData};
use crate::ring::{Completion, Errno};
use crate::session::{self, Verdict};
use crate::transport::TransportKind;

use super::state::Shard;

/// Rounds of submit-and-reap per turn before yielding to the executor (timers, inbox).
pub(super) const TURN_ROUNDS_MAX: usize = 16;

impl Shard {
    /// Submits, reaps and handles completions until the ring is quiet (or for
    /// TURN_ROUNDS_MAX rounds). Returns how many completions were handled.
    pub(crate) fn turn(&mut self) -> std::io::Result<usize> {
        let mut handled = 0;
        for _ in 0..TURN_ROUNDS_MAX {
            self.send_due_pings();
            self.counters.ring_enters += self.ring.submit()?;
            let mut completions = std::mem::take(&mut self.completions);
            self.ring.reap(&mut completions);
            if !completions.is_empty() {
                self.reaped_at = std::time::Instant::now();
            }
            for completion in &completions {
                self.on_completion(*completion);
            }
            let reaped = completions.len();
            self.counters.ring_completions += reaped as u64;
            self.completions = completions;
            self.flush_outbox();
            self.unpark_events();
            self.ring.publish_buffers();
            if reaped == 0 && self.pings_due.is_empty() {
                break;
            }
            handled += reaped;
        }
        // The last round reaped nothing after entering the kernel (or finding no reason to):
        // enter again only if that round's handling (outbox, unparked events) queued something.
        if self.ring.has_unsubmitted() {
            self.counters.ring_enters += self.ring.submit()?;
        }
        Ok(handled)
    }

    /// Waits in the shard's own ring for the next completion, if the rings are quiet and
    /// nothing else is due: up to `until_tick_us` (the rest of the tick) while the doorbell is
    /// read in the ring and no publish answer is awaited (both come from other threads:
    /// the doorbell announces the inbox, nothing announces an answer), else up to
    /// shard_wait_before_park_us (at most half a tick). Returns whether a completion came
    /// (the caller turns instead of parking). shard_wait_before_park_us = 0 never waits.
    pub(crate) fn wait_before_park(&mut self, until_tick_us: u64) -> std::io::Result<bool> {
        let short_us = self
            .config
            .shard_wait_before_park_us
            .min(self.ticks.tick_ms * 1_000 / 2);
        if short_us == 0 || !self.pings_due.is_empty() || self.ring.needs_enter() {
            return Ok(false);
        }
        let doorbell_wakes = self.doorbell_reading && self.push.publish_waits.pending() == 0;
        let wait_us = if doorbell_wakes {
            until_tick_us.max(short_us)
        } else {
            short_us
        };
        let woken = self.ring.wait_for_completion(wait_us)?;
        if woken {
            self.counters.ring_waits_woken += 1;
        }
        Ok(woken)
    }

    /// Puts a read of the shard's doorbell in its ring, unless one is there already.
    pub(crate) fn arm_doorbell(&mut self) {
        if self.doorbell_reading {
            return;
        }
        self.doorbell_reading = true;
        let eventfd = self.mesh.doorbell(self.index).raw_fd();
        self.ring
            .read_doorbell(eventfd, UserData::new(Op::Doorbell, 0, 0));
    }

    /// The doorbell rang (an inbox message; the shard loop takes it from the inbox after this
    /// turn): read it again. A failed read is not retried: the shard then waits in its ring
    /// only shard_wait_before_park_us and parks, as without a doorbell, and a message that
    /// comes during a park waits for the inbox task or the next tick.
    fn on_doorbell(&mut self, completion: Completion) {
        self.doorbell_reading = false;
        match completion.result {
            Ok(_) => {
                self.counters.ring_doorbell_wakes += 1;
                self.arm_doorbell();
            }
            Err(Errno::ECANCELED) => {}
            Err(errno) => tracing::warn!(
                shard = self.index,
                errno = errno.0,
                "doorbell read failed: inbox messages now wait for a park"
            ),
        }
    }

    fn on_completion(&mut self, completion: Completion) {
        match completion.user_data.op() {
            Some(Op::Accept) => self.on_accept(completion),
            Some(Op::AcceptSlot) => self.on_accept_slot(completion),
            Some(Op::Poll) => self.on_poll(completion),
            Some(Op::Recv) => self.on_recv(completion),
            Some(Op::RecvMulti) => self.on_recv_multi(completion),
            Some(Op::Send) => self.on_send(completion),
            Some(Op::Close) => self.on_close_done(completion),
            // A shutdown's result needs no action (the connection is closing, a failure there
            // cannot be retried usefully), but its slot may be closed only now (ring/mod.rs,
            // `shutdowns_pending`).
            Some(Op::Shutdown) => self.ring.shutdown_done(completion.user_data),
            Some(Op::Doorbell) => self.on_doorbell(completion),
            // The slot is already freed: nothing to do.
            Some(Op::Cancel) => {}
            None => unreachable!("unknown user_data {:?}", completion.user_data),
        }
    }

    /// A multishot accept (a shard of one ring): the kernel picked the table entry.
    fn on_accept(&mut self, completion: Completion) {
        // The listener's index rides in the slot field of the accept's user_data.
        let listener = completion.user_data.slot() as usize;
        if !completion.more() {
            self.accept_armed[listener] = false;
        }
        let slot = match completion.result {
            Ok(slot) => slot,
            Err(Errno::ENFILE) => {
                // Every slot, refusal slots included, is taken: the kernel closed the
                // connection it had accepted (a refusal at accept). Each ENFILE consumed one
                // queued connection, so re-arming at once is progress, not a spin.
                self.counters.accept_table_full += 1;
                self.arm_accept();
                return;
            }
            Err(errno) => {
                if errno != Errno::ECANCELED {
                    self.log_accept_error(errno);
                }
                // Re-armed by the next tick: never in a tight loop against a persistent error.
                return;
            }
        };
        self.on_accepted(slot, listener);
    }

    /// An accept into a slot the shard named (a shard of several rings): the slot came off
    /// the free list, and goes back to it if the accept failed.
    fn on_accept_slot(&mut self, completion: Completion) {
        let slot = completion.user_data.slot();
        let listener = completion.user_data.generation_bits() as usize;
        let accepts = self
            .slot_accepts
            .as_mut()
            .expect("accepts into named slots only with several rings");
        accepts.pending[listener] -= 1;
        if let Err(errno) = completion.result {
            accepts.free.push(slot);
            if errno != Errno::ECANCELED {
                self.log_accept_error(errno);
            }
            // Re-armed by the next tick: never in a tight loop against a persistent error.
            return;
        }
        self.on_accepted(slot, listener);
    }

    /// A close completed: the kernel has emptied the slot's table entry, so with several rings
    /// the slot may be named by the next accept.
    fn on_close_done(&mut self, completion: Completion) {
        let Some(accepts) = self.slot_accepts.as_mut() else {
            return;
        };
        accepts.free.push(completion.user_data.slot());
        self.arm_accept();
    }

    fn log_accept_error(&mut self, errno: Errno) {
        if let Some(suppressed) = self.log_accept_errors.allow(std::time::Instant::now()) {
            tracing::warn!(
                shard = self.index,
                errno = errno.0,
                suppressed,
                "accept failed"
            );
        }
    }

    /// A connection accepted into `slot` from listener `listener`: open it, start its
    /// transport and its reads, refuse it if the shard is full, start its first deadline.
    fn on_accepted(&mut self, slot: u32, listener: usize) {
        assert!(
            slot < self.conns.capacity(),
            "fixed-file tables hold the slab's slots"
        );
        let now = self.now_tick();
        let key = self.conns.open(slot, now);
        self.counters.accepted += 1;
        // Before a refusal too: a refused WebSocket peer is closed without a word (it has not
        // upgraded, so it cannot take the Error frame).
        let started = self.start_transport(slot, listener);
        self.ring.poll_multishot(slot, key.user_data(Op::Poll));
        if !started {
            self.close_now(slot, Some(CloseReason::TransportError));
            self.arm_accept();
            return;
        }
        let sessions = self.conns.open_count() - self.refusals_live as usize;
        if sessions > self.max_sessions as usize {
            // Over max_connections_per_shard: this connection holds one of the refusal slots
            // just long enough to be told.
            self.refuse_server_full(slot);
            self.arm_accept();
            return;
        }
        // Due at the hello deadline, or sooner if Hello may agree a shorter heartbeat: the
        // wheel's one entry must never be later than the connection's deadline (when it comes
        // due early, it is re-inserted at the real one).
        let first_due = self.ticks.hello.min(self.ticks.heartbeat_min_interval);
        self.wheel.insert(key, now + first_due);
        if self.drain_deadline_tick.is_some() {
            self.drain_one(slot);
        }
        self.arm_accept();
    }

    fn on_poll(&mut self, completion: Completion) {
        let ud = completion.user_data;
        let Some(conn) = self.conns.get_for(ud) else {
            return;
        };
        match completion.result {
            Ok(_) => {}
            Err(Errno::ECANCELED) => return,
            Err(errno) => return self.on_socket_error(ud.slot(), errno),
        }
        if conn.flags.has(ConnFlags::MULTISHOT_RECV) {
            // Readiness posted before the poll was swapped for a multishot recv, which reads.
            return;
        }
        // The kernel ends a multishot poll when it cannot post its next completion (the ring's
        // completion queue is full). Armed again at once on a socket whose bytes are still
        // unread (its recv waits for a buffer, or is in flight), the new poll fires at once
        // and, the queue still full, ends again: at 1M sessions after a mass leave this looped
        // ~300,000 POLL_ADDs per second, a whole core, and starved the Hellos of the refill
        // (docs/CAPACITY.md, "What broke on the way"). So the poll comes back once the recv
        // that reads those bytes has completed (`rearm_ended_poll`).
        if !completion.more() {
            conn.flags.set(ConnFlags::POLL_ENDED);
        }
        if conn.flags.has(ConnFlags::RECV_IN_FLIGHT) {
            conn.flags.set(ConnFlags::READ_AGAIN);
        } else {
            self.start_recv(ud.slot());
        }
    }

    /// Arms the poll of a connection whose multishot poll ended (`on_poll`) once nothing is
    /// reading it any more: bytes that came after the last recv make the new poll fire at once.
    fn rearm_ended_poll(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // A peer's EOF is read once: a poll on it would fire for good.
        let no_poll = ConnFlags::RECV_IN_FLIGHT | ConnFlags::MULTISHOT_RECV | ConnFlags::PEER_EOF;
        if !conn.flags.has(ConnFlags::POLL_ENDED) || conn.flags.has(no_poll) {
            return;
        }
        conn.flags.clear(ConnFlags::POLL_ENDED);
        self.ring.poll_multishot(key.slot, key.user_data(Op::Poll));
    }

    /// Issues a recv for `slot`, or queues it until a provided buffer is free. The
    /// RECV_IN_FLIGHT flag covers both, so a connection is never queued twice.
    pub(super) fn start_recv(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        let key = ConnKey {
            slot,
            generation: conn.generation,
        };
        if conn.flags.has(ConnFlags::READ_PAUSED) {
            // Backpressure: read again once its parked events are in the pipeline.
            conn.flags.set(ConnFlags::READ_AGAIN);
            return;
        }
        conn.flags.set(ConnFlags::RECV_IN_FLIGHT);
        conn.flags.clear(ConnFlags::READ_AGAIN);
        // Each multishot recv may hold a buffer of its ring at any moment: one-shot recvs on
        // that ring get the rest.
        let budget = &mut self.recv_budgets[self.ring.ring_of(slot)];
        if budget.in_flight >= self.recv_buffers - budget.multishot {
            budget.waiters.push_back(key);
            return;
        }
        budget.in_flight += 1;
        self.ring.recv(slot, key.user_data(Op::Recv));
    }

    /// A recv on `slot`'s ring completed: its buffer is free, so the longest-waiting
    /// connection of that ring may read.
    fn recv_slot_freed(&mut self, slot: u32) {
        let ring = self.ring.ring_of(slot);
        self.recv_budgets[ring].in_flight -= 1;
        while let Some(entry) = self.recv_budgets[ring].waiters.pop_front() {
            let Some(conn) = self.conns.get_mut(entry) else {
                continue;
            };
            conn.flags.clear(ConnFlags::RECV_IN_FLIGHT);
            self.start_recv(entry.slot);
            return;
        }
    }

    /// The live connection a recv completion (one-shot or multishot) belongs to: its slot,
    /// generation and the buffer the kernel filled. A completion of a closed connection, or one
    /// that carries no bytes, gives back any buffer it names at once (the kernel does not
    /// consume a buffer for an empty or failed recv; if it ever names one, it still goes back).
    fn recv_owner(&mut self, completion: Completion) -> Option<(ConnKey, Option<u16>)> {
        let ud = completion.user_data;
        let buffer_id = completion.buffer_id();
        let generation = self.conns.get_for(ud).map(|conn| conn.generation);
        if generation.is_none() || !matches!(completion.result, Ok(1..)) {
            if let Some(buffer_id) = buffer_id {
                self.ring.bufs_mut(ud.slot()).recycle(buffer_id);
            }
        }
        let key = ConnKey {
            slot: ud.slot(),
            generation: generation?,
        };
        Some((key, buffer_id))
    }

    fn on_recv(&mut self, completion: Completion) {
        self.recv_slot_freed(completion.user_data.slot());
        let Some((key, buffer_id)) = self.recv_owner(completion) else {
            return;
        };
        self.on_recv_result(key, buffer_id, completion);
        self.rearm_ended_poll(key);
    }

    fn on_recv_result(&mut self, key: ConnKey, buffer_id: Option<u16>, completion: Completion) {
        let slot = key.slot;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.flags.clear(ConnFlags::RECV_IN_FLIGHT);
        }
        match completion.result {
            Ok(0) => self.on_peer_eof(slot),
            Ok(n) => {
                let busy = self.sent_within_a_tick(slot);
                self.on_received(slot, buffer_id, n as usize);
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let read_again =
                    completion.socket_nonempty() || conn.flags.has(ConnFlags::READ_AGAIN);
                // Request/response traffic (the recv drained the socket, the replies go out
                // as fast as they come) gains from a multishot recv; a bulk stream does not.
                let upgrade = busy
                    && !completion.socket_nonempty()
                    && !replies_queued(conn, self.config.recv_buffer_bytes);
                if upgrade && self.start_multishot_recv(slot) {
                    return;
                }
                if read_again {
                    self.start_recv(slot);
                }
            }
            Err(Errno::ENOBUFS) => {
                // Only if a buffer was recycled but not yet published: read again next round.
                self.counters.recv_no_buffers += 1;
                self.start_recv(slot);
            }
            // Nothing to read (an earlier recv took the bytes the poll saw): the recv does not
            // wait (ring::Ring::recv); the poll reports the next bytes. Readiness the poll
            // reported while this recv was in flight is not left unread.
            Err(Errno::EAGAIN) => {
                let again = self
                    .conns
                    .get_mut(key)
                    .is_some_and(|conn| conn.flags.has(ConnFlags::READ_AGAIN));
                if again {
                    self.start_recv(slot);
                }
            }
            Err(Errno::ECANCELED) => {}
            Err(errno) => self.on_socket_error(slot, errno),
        }
    }

    /// A recv (one-shot or multishot) filled `len` bytes of a provided buffer: count them,
    /// hand them to the session, and give the buffer back to the ring.
    fn on_received(&mut self, slot: u32, buffer_id: Option<u16>, len: usize) {
        let buffer_id = buffer_id.expect("a recv with data names its buffer");
        self.counters.bytes_in += len as u64;
        self.on_bytes(slot, Input::Buffer { buffer_id, len });
        self.ring.bufs_mut(slot).recycle(buffer_id);
    }

    /// Whether an open session's previous frame came less than a timer tick ago (checked
    /// before the bytes at hand move its activity tick).
    fn sent_within_a_tick(&mut self, slot: u32) -> bool {
        let now = self.now_tick();
        self.conns.get_live_mut(slot).is_some_and(|conn| {
            conn.state == SessionState::Open && now <= conn.last_activity_tick + 1
        })
    }

    /// Swaps a busy connection's poll for a multishot recv, if the shard has room for one
    /// more and nothing else is reading. Returns whether it did.
    fn start_multishot_recv(&mut self, slot: u32) -> bool {
        let ring = self.ring.ring_of(slot);
        if self.multishot_recvs >= self.multishot_recv_max
            || self.recv_budgets[ring].multishot >= self.recv_buffers / 2
        {
            return false;
        }
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return false;
        };
        let blocked = ConnFlags::MULTISHOT_RECV
            | ConnFlags::RECV_IN_FLIGHT
            | ConnFlags::READ_PAUSED
            | ConnFlags::PEER_EOF;
        if conn.state != SessionState::Open || conn.flags.has(blocked) {
            return false;
        }
        // The multishot recv reads whatever is pending when it is armed.
        conn.flags.clear(ConnFlags::READ_AGAIN);
        // Its poll is cancelled (or already ended): end_multishot_recv arms the next one.
        conn.flags.clear(ConnFlags::POLL_ENDED);
        conn.flags.set(ConnFlags::MULTISHOT_RECV);
        let key = ConnKey {
            slot,
            generation: conn.generation,
        };
        self.multishot_recvs += 1;
        self.recv_budgets[ring].multishot += 1;
        self.counters.multishot_recvs_started += 1;
        self.ring
            .cancel(key.user_data(Op::Poll), key.user_data(Op::Cancel));
        self.ring.recv_multishot(slot, key.user_data(Op::RecvMulti));
        true
    }

    /// Goes back to a poll: after the multishot recv ended by itself (`cancel` false), or to
    /// stop it (silent connection, parked events).
    pub(super) fn end_multishot_recv(&mut self, slot: u32, cancel: bool) {
        let Some(key) = self.release_multishot_recv(slot) else {
            return;
        };
        if cancel {
            self.ring
                .cancel(key.user_data(Op::RecvMulti), key.user_data(Op::Cancel));
        }
        // Armed after the cancel: bytes the recv already took complete before it, and bytes
        // still in the socket make the new poll fire at once.
        self.ring.poll_multishot(slot, key.user_data(Op::Poll));
    }

    /// Clears a live connection's multishot-recv mark and frees its place under
    /// multishot_recv_max_per_shard. Returns its key, or None if it held no multishot recv.
    fn release_multishot_recv(&mut self, slot: u32) -> Option<ConnKey> {
        let conn = self.conns.get_live_mut(slot)?;
        if !conn.flags.has(ConnFlags::MULTISHOT_RECV) {
            return None;
        }
        conn.flags.clear(ConnFlags::MULTISHOT_RECV);
        self.multishot_recvs -= 1;
        self.recv_budgets[self.ring.ring_of(slot)].multishot -= 1;
        Some(ConnKey {
            slot,
            generation: conn.generation,
        })
    }

    fn on_recv_multi(&mut self, completion: Completion) {
        let Some((key, buffer_id)) = self.recv_owner(completion) else {
            return;
        };
        let slot = key.slot;
        let ended = !completion.more();
        match completion.result {
            Ok(0) => {
                // EOF ends the recv; nothing more to read, so no poll either.
                self.release_multishot_recv(slot);
                self.on_peer_eof(slot);
            }
            // Bytes are handled even after a swap back to a poll was asked for: they were
            // taken from the socket before the cancel, so they come before anything else.
            Ok(n) => {
                self.on_received(slot, buffer_id, n as usize);
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                // A full buffer means a bulk sender, and replies piling up a peer not keeping
                // up: both go back to poll + recv (one buffer per read, through the FIFO).
                let bulk = n >= self.config.recv_buffer_bytes;
                let backed_up = replies_queued(conn, self.config.recv_buffer_bytes);
                if ended || bulk || backed_up || conn.flags.has(ConnFlags::READ_PAUSED) {
                    self.end_multishot_recv(slot, !ended);
                }
            }
            Err(Errno::ENOBUFS) => {
                // The buffer ring ran dry: poll + recv waits its turn in the FIFO instead.
                self.counters.recv_no_buffers += 1;
                self.end_multishot_recv(slot, false);
            }
            // Cancelled by a swap back to a poll (the flag is already clear) or by a close.
            Err(Errno::ECANCELED) => {}
            Err(errno) => self.on_socket_error(slot, errno),
        }
    }

    /// Bytes from the socket -> frames -> session. Complete frames are read in place from the
    /// receive buffer; only an incomplete tail is copied into a pooled decoder the connection
    /// keeps until the frame completes.
    ///
    /// Under the `backpressure` policy an Event that finds the pipeline full is parked and
    /// the connection paused: decoding stops right after it, and the rest of the input (and
    /// anything read before the pause took effect) is held as bytes in `held_input` until
    /// `unpark_events` feeds it back. So a paused connection parks one event, not a buffer of
    /// them.
    pub(super) fn on_bytes(&mut self, slot: u32, input: Input) {
        let now = self.now_tick();
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        if conn.state == SessionState::Closing {
            return;
        }
        let generation = conn.generation;
        if conn.transport != TransportKind::Plain {
            if let Input::Buffer { buffer_id, len } = input {
                // Through the transport first (shard/transport.rs); held bytes are plaintext.
                return self.on_transport_bytes(slot, buffer_id, len);
            }
        }
        if conn.flags.has(ConnFlags::READ_PAUSED) {
            let held = self
                .held_input
                .entry(slot)
                .or_insert_with(|| (generation, BytesMut::new()));
            debug_assert_eq!(held.0, generation, "held input is dropped on close");
            match input {
                Input::Buffer { buffer_id, len } => {
                    held.1
                        .extend_from_slice(self.ring.bufs(slot).filled(buffer_id, len));
                    self.counters.held_input_copied_bytes += len as u64;
                }
                Input::Held(mut bytes) => {
                    // Fed back and paused again before reading on: it comes first.
                    self.counters.held_input_copied_bytes += held.1.len() as u64;
                    bytes.extend_from_slice(&held.1);
                    held.1 = bytes;
                }
            }
            return;
        }
        let mut decoder = match self.conns.get_live_mut(slot).and_then(|c| c.decoder.take()) {
            Some(decoder) => decoder,
            None => self.take_decoder(),
        };
        // Counted again below if the connection keeps a partial frame.
        self.partial_frame_bytes -= decoder.buffered_bytes() as u64;
        // A buffer was filled by a completion of this round; held bytes are fed later, from
        // any turn, so they read the clock.
        let (mut held_bytes, buffer, received_at) = match input {
            Input::Buffer { buffer_id, len } => (None, Some((buffer_id, len)), self.reaped_at),
            Input::Held(bytes) => (Some(bytes), None, std::time::Instant::now()),
        };
        let bytes: &[u8] = match (&held_bytes, buffer) {
            (Some(held), _) => held,
            (None, Some((buffer_id, len))) => self.ring.bufs(slot).filled(buffer_id, len),
            (None, None) => unreachable!("input is a buffer or held bytes"),
        };
        let frames_in_before = self.counters.frames_in;
        let (conns, mut cx) = super::state::split_for_session(
            &mut self.conns,
            &mut self.handler,
            &mut self.counters,
            &mut self.outbound_pool,
            &self.limits,
            &mut self.push,
            self.index,
            slot,
            received_at,
        );
        let conn = conns.get_live_mut(slot).expect("checked above");
        let mut verdict = Verdict::Continue;
        let fed = decoder.feed(bytes, |frame| {
            verdict = session::on_frame(conn, &mut cx, frame, now);
            if verdict == Verdict::Continue && conn.flags.has(ConnFlags::READ_PAUSED) {
                // Its event was parked: nothing more is decoded until it is taken.
                return std::ops::ControlFlow::Break(());
            }
            verdict.flow()
        });
        if let Err(error) = &fed {
            let reason = error.to_string();
            session::queue_error(conn, &mut cx, error.code(), error.frame_id(), &reason);
            verdict = Verdict::Close(CloseReason::ProtocolError);
            if let Some(suppressed) = self.log_protocol_errors.allow(std::time::Instant::now()) {
                tracing::info!(
                    shard = self.index,
                    slot,
                    code = error.code().name(),
                    suppressed,
                    "bad input: {reason}"
                );
            }
        }
        let paused_at = match fed {
            Ok(Fed::Stopped { consumed }) if verdict == Verdict::Continue => Some(consumed),
            _ => None,
        };
        debug_assert!(
            matches!(fed, Err(_) | Ok(Fed::All))
                || verdict != Verdict::Continue
                || paused_at.is_some()
        );
        if let Some(consumed) = paused_at.filter(|&consumed| consumed < bytes.len()) {
            // Read from a buffer: its rest is copied once. Already held: the rest stays where
            // it is (advancing is O(1)), so a burst that pauses at every event is fed in
            // linear time, not re-copied at each pause.
            let copied = held_bytes
                .is_none()
                .then(|| BytesMut::from(&bytes[consumed..]));
            if copied.is_some() {
                self.counters.held_input_copied_bytes += (bytes.len() - consumed) as u64;
            }
            let rest = copied.unwrap_or_else(|| {
                let mut held = held_bytes.take().expect("held input was fed");
                held.advance(consumed);
                held
            });
            self.held_input.insert(slot, (generation, rest));
        }
        let frame_completed = self.counters.frames_in > frames_in_before;
        self.settle_decoder(slot, decoder, verdict, frame_completed);
    }

    fn on_peer_eof(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        conn.flags.set(ConnFlags::PEER_EOF);
        let closing = conn.state == SessionState::Closing;
        let draining = conn.state == SessionState::Draining;
        let mid_frame = conn
            .decoder
            .as_ref()
            .is_some_and(|d| d.buffered_bytes() > 0);
        let idle = conn.outbound.is_none() && !conn.flags.has(ConnFlags::SEND_IN_FLIGHT);
        match (closing, idle) {
            (true, true) => self.close_now(slot, None),
            (true, false) => {}
            (false, true) => {
                let reason = match (draining, mid_frame) {
                    (true, _) => CloseReason::Drain,
                    (false, true) => CloseReason::PeerEofMidFrame,
                    (false, false) => CloseReason::PeerEof,
                };
                self.close_now(slot, Some(reason));
            }
            // The peer half-closed but may still read: flush our replies, then close.
            (false, false) => {
                let reason = if draining {
                    CloseReason::Drain
                } else {
                    CloseReason::PeerEof
                };
                self.begin_close(slot, reason);
            }
        }
    }

    fn on_socket_error(&mut self, slot: u32, errno: Errno) {
        if let Some(suppressed) = self.log_socket_errors.allow(std::time::Instant::now()) {
            tracing::debug!(
                shard = self.index,
                slot,
                errno = errno.0,
                suppressed,
                "socket error"
            );
        }
        let closing = self
            .conns
            .get_live_mut(slot)
            .is_some_and(|c| c.state == SessionState::Closing);
        self.close_now(slot, (!closing).then_some(CloseReason::SocketError));
    }

    fn on_send(&mut self, completion: Completion) {
        let ud = completion.user_data;
        let slot = ud.slot();
        let batch = self.ring.take_sent(ud);
        let Some(conn) = self.conns.get_for(ud) else {
            return;
        };
        conn.flags.clear(ConnFlags::SEND_IN_FLIGHT);
        let sent = match completion.result {
            Ok(sent) => sent as usize,
            Err(Errno::ECANCELED) => return,
            Err(errno) => return self.on_socket_error(slot, errno),
        };
        self.counters.bytes_out += sent as u64;
        let out = conn
            .outbound
            .as_mut()
            .expect("a send in flight keeps its queue");
        if let Some(rest) = out.complete(batch, sent) {
            conn.flags.set(ConnFlags::SEND_IN_FLIGHT);
            self.ring.send(slot, ud, rest);
            return;
        }
        if let Some(since) = out.in_flight_since.take() {
            let latency_us = self.reaped_at.saturating_duration_since(since).as_micros() as u64;
            self.reply_latency_us.saturating_record(latency_us.max(1));
        }
        self.flush(slot);
        self.resume_if_replies_drained(slot);
    }
}

impl Shard {
    /// A session paused for its backed-up replies reads again once they drained.
    fn resume_if_replies_drained(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        if !conn.flags.has(ConnFlags::REPLIES_PAUSED)
            || !session::replies_drained(conn, &self.limits)
        {
            return;
        }
        conn.flags.clear(ConnFlags::REPLIES_PAUSED);
        let key = self.conns.key(slot);
        self.resume_reading(key);
    }
}

/// Whether a receive buffer's worth of replies or more waits for the peer.
fn replies_queued(conn: &crate::conn::Conn, recv_buffer_bytes: u32) -> bool {
    conn.outbound
        .as_ref()
        .is_some_and(|out| out.total_bytes() >= recv_buffer_bytes as usize)
}

/// Where the bytes [`Shard::on_bytes`] handles come from.
pub(super) enum Input {
    /// `len` bytes the kernel put in a provided buffer.
    Buffer { buffer_id: u16, len: usize },
    /// Bytes read earlier and held while the connection's events were parked.
    Held(BytesMut),
}
