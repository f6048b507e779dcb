//! The shard side of push and events: messages from other threads (publish, deliver, client
//! directory), fan-out of an encoded Push frame to local sessions, messages to other shards,
//! and moving parked events into the pipeline when it has room.

use bytes::{Bytes, BytesMut};
use holdfast_protocol::encode_frame;
use holdfast_protocol::payload::{Push, Response, TopicResumed};

use super::state::Shard;
use crate::cluster::stream::{self, Arrival, Stamp};
use crate::conn::{ConnFlags, ConnId, ConnKey, SessionState};
use crate::mesh::ShardMsg;
use crate::mesh::{owner_shard, Publish, PublishOutcome, Scope, Target, BROADCAST_TOPIC};
use crate::push::history::Since;
use crate::push::publish_answer::{self, PublishAnswer, Waited};
use crate::push::resume::{
    PendingResume, TopicReply, WaitingResume, RESUME_REPLY_TIMEOUT_MS,
    WAITING_RESUMES_MAX_PER_SHARD,
};
use crate::session::{self, Verdict};

impl Shard {
    /// Handles one message from another thread.
    pub(crate) fn on_message(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Drain => self.start_drain(),
            ShardMsg::Stats(reply) => {
                let _ = reply.send(self.report());
            }
            ShardMsg::Publish(publish) => self.on_publish(publish, true),
            ShardMsg::ClusterPublish(publish) => self.on_publish(publish, false),
            ShardMsg::StreamPublish {
                target,
                stamp,
                payload,
            } => self.on_stream_publish(&target, stamp, &payload),
            ShardMsg::EventsTaken => self.unpark_events(),
            ShardMsg::Deliver { scope, frame } => self.deliver(&scope, &frame),
            ShardMsg::ResumeRequest {
                conn,
                request_id,
                index,
                topic,
                epoch,
                last_seq,
            } => self.on_resume_request(conn, request_id, index, &topic, epoch, last_seq),
            ShardMsg::ResumeReply {
                conn,
                request_id,
                index,
                resumed,
                frames,
            } => {
                let reply = TopicReply { resumed, frames };
                if let Some(done) = self
                    .push
                    .resumes
                    .answer(conn.key(), request_id, index, reply)
                {
                    self.finish_resume(conn.slot(), done);
                }
            }
            ShardMsg::ClientRegister { client_id, conn } => {
                let first = self.push.directory.lookup(&client_id).is_empty();
                self.push.directory.register(&client_id, conn);
                // What was sent to this client while it had no session, oldest first.
                let now = std::time::Instant::now();
                for frame in self.push.inbox.take(&client_id, now) {
                    self.route(
                        conn.shard(),
                        ShardMsg::Deliver {
                            scope: Scope::Conn(conn),
                            frame,
                        },
                    );
                }
                if let (true, Some(link)) = (first, &self.push.cluster) {
                    link.interest(crate::cluster::Interest::Client(client_id), true);
                }
            }
            ShardMsg::ClientUnregister { client_id, conn } => {
                let had = !self.push.directory.lookup(&client_id).is_empty();
                self.push.directory.unregister(&client_id, conn);
                let last = had && self.push.directory.lookup(&client_id).is_empty();
                if let (true, Some(link)) = (last, &self.push.cluster) {
                    link.interest(crate::cluster::Interest::Client(client_id), false);
                }
            }
        }
        self.flush_outbox();
    }

    /// Encodes a Push frame once.
    fn encode_push(&self, topic: &str, seq: u64, payload: &[u8]) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(payload.len() + topic.len() + 64);
        let push = Push {
            topic,
            seq,
            payload,
        };
        encode_frame(&mut out, 0, 0, &push, self.limits.max_frame_bytes).ok()?;
        Some(out.freeze())
    }

    /// Cluster mode: keep the bridge told of this shard's topic interest from now on (core
    /// NATS; in JetStream mode every host reads every topic from the stream).
    pub(super) fn attach_cluster(&mut self, link: Option<crate::cluster::Link>) {
        self.push.stream_run = link.as_ref().and_then(|link| link.stream_run());
        if link.is_some() && self.push.stream_run.is_none() {
            self.push.topics.track_changes();
        }
        self.push.cluster = link;
    }

    /// A publish for a target this shard owns. `forward`: it entered this host (not from the
    /// cluster), so in cluster mode it also goes to NATS (topic, broadcast, client targets).
    fn on_publish(&mut self, publish: Publish, forward: bool) {
        let Publish {
            target,
            payload,
            msg_id,
            reply,
        } = publish;
        // Draining: refuse what a caller waits on rather than accept a push the sessions
        // leaving now would never get (an accepted publish is never silently lost).
        if forward && self.drain_deadline_tick.is_some() {
            if let Some(reply) = reply {
                let _ = reply.send(PublishOutcome::Draining);
                return;
            }
        }
        // JetStream mode: a topic or broadcast is numbered by the stream; it comes back to this
        // shard (as to every host's) through the consumer, as a StreamPublish.
        if let (Some(link), Target::Topic(_) | Target::Broadcast) = (&self.push.cluster, &target) {
            if link.stream_run().is_some() {
                if let Err(Some(reply)) = link.publish_to_stream(&target, payload, msg_id, reply) {
                    let _ = reply.send(PublishOutcome::Unavailable);
                }
                return;
            }
        }
        let forwarded = forward
            && self
                .push
                .cluster
                .as_ref()
                .is_some_and(|link| link.publish(&target, &payload));
        let outcome = match target {
            Target::Topic(topic) => {
                self.publish_sequenced(&topic, Scope::Topic(topic.as_str().into()), &payload)
            }
            Target::Broadcast => {
                self.publish_sequenced(BROADCAST_TOPIC, Scope::Broadcast, &payload)
            }
            Target::Conn(id) => match self.encode_push("", 0, &payload) {
                Some(frame) if id.shard() == self.index => {
                    let delivered = self.deliver_to_conn(id, &frame);
                    if delivered {
                        PublishOutcome::Delivered { connections: 1 }
                    } else {
                        PublishOutcome::NoSuchTarget
                    }
                }
                _ => PublishOutcome::NoSuchTarget,
            },
            Target::Client(client_id) => {
                debug_assert_eq!(owner_shard(&client_id, self.push.shards), self.index);
                let conns: Vec<ConnId> = self.push.directory.lookup(&client_id).to_vec();
                match (conns.is_empty(), self.encode_push("", 0, &payload)) {
                    (true, Some(frame)) if self.push.inbox.enabled() => {
                        // Held for the client's next session (see Config::client_inbox_*).
                        self.push.inbox_seq += 1;
                        let seq = self.push.inbox_seq;
                        let now = std::time::Instant::now();
                        self.push.inbox.record(&client_id, seq, frame, now);
                        PublishOutcome::Delivered { connections: 0 }
                    }
                    (false, Some(frame)) => {
                        for conn in &conns {
                            self.route(
                                conn.shard(),
                                ShardMsg::Deliver {
                                    scope: Scope::Conn(*conn),
                                    frame: frame.clone(),
                                },
                            );
                        }
                        PublishOutcome::Delivered {
                            connections: conns.len() as u64,
                        }
                    }
                    _ => PublishOutcome::NoSuchTarget,
                }
            }
        };
        // A client may have sessions on other hosts: forwarded is not "no such target" (the
        // count is of this host's connections).
        let outcome = match outcome {
            PublishOutcome::NoSuchTarget if forwarded => {
                PublishOutcome::Delivered { connections: 0 }
            }
            outcome => outcome,
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Owner of a topic (or of broadcasts): next sequence number, encode once, hand the same
    /// bytes to every shard.
    fn publish_sequenced(&mut self, topic: &str, scope: Scope, payload: &[u8]) -> PublishOutcome {
        let seq = self.push.next_seq(topic);
        self.fan_out(topic, scope, seq, payload)
    }

    /// JetStream mode, owner of the topic (or of broadcasts): a message of the stream with its
    /// number in the topic's one sequence. The next number is delivered and held; one already
    /// held here is dropped; after a gap or in a new run the topic's history here starts again
    /// at it (cluster::stream::arrival). Resumes waiting for this host to catch up are looked
    /// at again.
    fn on_stream_publish(&mut self, target: &Target, stamp: Stamp, payload: &[u8]) {
        let (Some(key), Some(_)) = (stream::target_key(target), self.push.stream_run) else {
            return;
        };
        let scope = match target {
            Target::Topic(topic) => Scope::Topic(topic.as_str().into()),
            _ => Scope::Broadcast,
        };
        let arrival = stream::arrival(stamp, self.push.epoch(key), self.push.last_seq(key));
        match arrival {
            Arrival::Duplicate => return,
            Arrival::Next => {}
            Arrival::Gap | Arrival::NewRun => {
                // (A host's first message of a topic starts mid-way as a rule: not a gap.)
                if arrival == Arrival::Gap && self.push.last_seq(key) > 0 {
                    crate::cluster::JS_GAPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // The history of a topic is gapless, in one run: it starts again here.
                let _ = self.push.history.take(key, std::time::Instant::now());
                self.push.topic_runs.insert(key.into(), stamp.run);
            }
        }
        self.push.topic_seqs.insert(key.into(), stamp.seq);
        self.fan_out(key, scope, stamp.seq, payload);
        self.answer_waiting_resumes(key);
    }

    /// JetStream mode: the resumes of `topic` held back until this host caught up, asked again
    /// (those still ahead wait on).
    fn answer_waiting_resumes(&mut self, topic: &str) {
        if !self.push.waiting_resumes.iter().any(|w| &*w.topic == topic) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.push.waiting_resumes)
            .into_iter()
            .partition(|w| &*w.topic == topic);
        self.push.waiting_resumes = waiting;
        for w in ready {
            self.on_resume_request(w.conn, w.request_id, w.index, &w.topic, w.epoch, w.last_seq);
        }
    }

    /// Encodes the Push of `topic`'s `seq` once, holds it in the history, and hands the same
    /// bytes to every shard.
    fn fan_out(&mut self, topic: &str, scope: Scope, seq: u64, payload: &[u8]) -> PublishOutcome {
        let Some(frame) = self.encode_push(topic, seq, payload) else {
            return PublishOutcome::NoSuchTarget;
        };
        if self.push.history.enabled() {
            let now = std::time::Instant::now();
            self.push.history.record(topic, seq, frame.clone(), now);
        }
        for shard in 0..self.push.shards {
            self.route(
                shard,
                ShardMsg::Deliver {
                    scope: scope.clone(),
                    frame: frame.clone(),
                },
            );
        }
        PublishOutcome::Sequenced { seq }
    }

    /// Sends `msg` to `shard`, or handles it here if that is us.
    fn route(&mut self, shard: usize, msg: ShardMsg) {
        self.push.outbox.push((shard, msg));
    }

    /// Sends what the session layer and publishes queued for other shards. Never blocks: a
    /// full inbox drops the message, counted (by the mesh) and logged.
    pub(super) fn flush_outbox(&mut self) {
        if let Some(link) = &self.push.cluster {
            for (topic, on) in self.push.topics.take_changes() {
                link.interest(crate::cluster::Interest::Topic(topic), on);
            }
            link.flush();
        }
        while !self.push.outbox.is_empty() {
            let outbox = std::mem::take(&mut self.push.outbox);
            for (shard, msg) in outbox {
                if shard == self.index {
                    self.on_message(msg);
                    continue;
                }
                // Counted by the mesh (cross_shard_dropped in this shard's counters).
                if self.mesh.try_send(shard, msg).is_err() {
                    if let Some(suppressed) = self.log_cross_shard.allow(std::time::Instant::now())
                    {
                        tracing::warn!(
                            shard = self.index,
                            to = shard,
                            suppressed,
                            "peer inbox full: message dropped"
                        );
                    }
                }
            }
        }
    }

    /// Queues an encoded Push frame for every local session in `scope`, by reference: a shard
    /// with local receivers of a topic or broadcast takes one copy of the frame (so the
    /// reference count every subscriber's queue touches lives on this core's cache, not on a
    /// line shared with the encoding shard) and every subscriber's send points at that copy; a
    /// shard with none takes no copy, and one connection uses the frame as it came.
    fn deliver(&mut self, scope: &Scope, frame: &Bytes) {
        // Who gets it here, first: a shard with no local receiver takes no copy at all.
        // A session resuming the topic gets it from the replay instead (push::resume).
        let targets: Vec<ConnKey> = match scope {
            Scope::Topic(topic) => self
                .push
                .topics
                .subscribers(topic)
                .iter()
                .copied()
                .filter(|entry| !self.push.resumes.holds(*entry, topic))
                .collect(),
            Scope::Broadcast => {
                // A session's first broadcast records where its live ones start.
                let now = std::time::Instant::now();
                let push = &mut self.push;
                push.broadcasts.delivered(frame);
                self.conns
                    .open_sessions_clearing(ConnFlags::BROADCAST_UNSEEN, |entry| {
                        push.broadcasts.first_live(entry, now)
                    })
                    .filter(|entry| !push.resumes.holds(*entry, BROADCAST_TOPIC))
                    .collect()
            }
            Scope::Conn(id) => {
                self.deliver_to_conn(*id, frame);
                return;
            }
        };
        if targets.is_empty() {
            return;
        }
        let frame = &Bytes::copy_from_slice(frame);
        for entry in targets {
            self.enqueue_push(entry, frame);
        }
    }

    /// Owner of `topic`: what a resuming session missed after `last_seq` of `epoch`, sent back
    /// to the session's shard behind every Push of the topic sequenced so far.
    fn on_resume_request(
        &mut self,
        conn: ConnId,
        request_id: u64,
        index: usize,
        topic: &str,
        epoch: u64,
        last_seq: u64,
    ) {
        let now = std::time::Instant::now();
        let current_epoch = self.push.epoch(topic);
        let seq = self.push.last_seq(topic);
        // The client's point is in another epoch (this server restarted, or another host
        // numbered it): nothing of that epoch can be replayed. But when the history still holds
        // the current epoch from seq 1, all of it is replayed, with the seam at 0: the Ack says
        // "not recovered, at seq 0" (so a client resets its numbering and reports the reset),
        // and pushes 1, 2, ... follow in order: nothing published since the restart is missed.
        let new_epoch = epoch != 0 && epoch != current_epoch;
        // JetStream mode: the client saw numbers this host has not read yet (another host
        // delivered them first). Held back until this host has them, so the seam stays exact.
        if self.push.stream_run.is_some()
            && epoch == current_epoch
            && last_seq > seq
            && self.push.waiting_resumes.len() < WAITING_RESUMES_MAX_PER_SHARD
        {
            self.push.waiting_resumes.push(WaitingResume {
                conn,
                request_id,
                index,
                topic: topic.into(),
                epoch,
                last_seq,
                deadline: now + std::time::Duration::from_millis(RESUME_REPLY_TIMEOUT_MS),
            });
            return;
        }
        let since = if epoch == current_epoch && last_seq <= seq {
            self.push.history.since(topic, last_seq, seq, now)
        } else if new_epoch {
            self.push.history.since(topic, 0, seq, now)
        } else {
            Since::Gap {
                oldest_seq: self.push.history.oldest_seq(topic, now),
            }
        };
        let (recovered, seam_seq, oldest_seq, frames) = match since {
            Since::Complete(frames) if new_epoch => {
                self.counters.resume_epoch_replays += 1;
                (0, 0, self.push.history.oldest_seq(topic, now), frames)
            }
            Since::Complete(frames) => (1, seq, self.push.history.oldest_seq(topic, now), frames),
            Since::Gap { oldest_seq } => (0, seq, oldest_seq, Vec::new()),
        };
        let resumed = TopicResumed {
            epoch: current_epoch,
            seq: seam_seq,
            oldest_seq,
            recovered,
        };
        self.counters.resume_replayed_pushes += frames.len() as u64;
        self.route(
            conn.shard(),
            ShardMsg::ResumeReply {
                conn,
                request_id,
                index,
                resumed,
                frames,
            },
        );
    }

    /// Every owner answered a session's SubscribeResume (or the wait timed out): the Ack with
    /// one result per topic, then each topic's replay in order; live Pushes flow from here on.
    pub(super) fn finish_resume(&mut self, slot: u32, mut pending: PendingResume) {
        let key = ConnKey {
            slot,
            generation: pending.generation,
        };
        let max_outbound_bytes = self.limits.max_outbound_bytes;
        // What reached the session live before it resumed "*" is not replayed again.
        if let Some(live) = pending.broadcast_live {
            let run_now = self.push.broadcasts.run();
            for (topic, reply) in pending.topics.iter().zip(&mut pending.replies) {
                if let (BROADCAST_TOPIC, Some(reply)) = (&**topic, reply) {
                    live.trim(reply, run_now);
                }
            }
        }
        // A topic unsubscribed while its resume waited gets its Ack result but no replay.
        let wanted: Vec<bool> = pending
            .topics
            .iter()
            .map(|topic| &**topic == BROADCAST_TOPIC || self.push.topics.is_subscribed(key, topic))
            .collect();
        let (conns, mut cx) = self.session_parts(slot);
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        if conn.state != SessionState::Open {
            return;
        }
        // A replay that would pass the session's outbound bound would cut it as a slow
        // consumer: such a topic is answered "not recovered" instead (the client re-fetches).
        let queued_bytes = conn.outbound.as_ref().map_or(0, |out| out.total_bytes());
        let ack_bytes = holdfast_protocol::HEADER_BYTES + 8 + 25 * pending.replies.len();
        let mut room = max_outbound_bytes.saturating_sub(queued_bytes + ack_bytes);
        let mut results: Vec<TopicResumed> = Vec::with_capacity(pending.replies.len());
        for (reply, wanted) in pending.replies.iter_mut().zip(&wanted) {
            let Some(reply) = reply else {
                // The owner did not answer in time: epoch 0 says "unknown, resume again".
                results.push(TopicResumed {
                    epoch: 0,
                    seq: 0,
                    oldest_seq: 0,
                    recovered: 0,
                });
                continue;
            };
            if !wanted {
                reply.frames.clear();
            }
            let replay_bytes: usize = reply.frames.iter().map(Bytes::len).sum();
            if replay_bytes > room {
                reply.resumed.recovered = 0;
                reply.frames.clear();
            } else {
                room -= replay_bytes;
            }
            results.push(reply.resumed);
        }
        session::push::queue_frame_ack(conn, &mut cx, pending.request_id, &results);
        for reply in pending.replies.into_iter().flatten() {
            for frame in &reply.frames {
                if !self.enqueue_push(key, frame) {
                    return;
                }
            }
        }
        self.flush(slot);
    }

    /// A publisher session's publish ended (push::publish_answer): tell the session, if it is
    /// still the one that asked and still open.
    pub(super) fn answer_publish(&mut self, key: ConnKey, request_id: u64, waited: Waited) {
        self.push.publish_waits.finish(key);
        let (conns, mut cx) = self.session_parts(key.slot);
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        if conn.state != SessionState::Open {
            return;
        }
        match publish_answer::answer(waited) {
            PublishAnswer::Accepted(body) => {
                let response = Response {
                    body: body.as_bytes(),
                };
                cx.queue_frame(conn, request_id, &response);
            }
            PublishAnswer::Refused(code, reason) => {
                session::queue_error(conn, &mut cx, code, request_id, reason);
            }
        }
        self.flush(key.slot);
    }

    /// Resumes whose owners did not all answer in time: answered "not recovered" for the
    /// topics still missing, so a lost message never holds a session's pushes for good.
    pub(super) fn expire_resumes(&mut self) {
        let now = std::time::Instant::now();
        self.push.broadcasts.expire(now);
        for (slot, pending) in self.push.resumes.take_expired(now) {
            self.finish_resume(slot, pending);
        }
        // Their subscribers' shards answered them "unknown, resume again" by now.
        self.push.waiting_resumes.retain(|w| w.deadline > now);
    }

    fn deliver_to_conn(&mut self, id: ConnId, frame: &Bytes) -> bool {
        if id.shard() != self.index || self.conns.get_mut(id.key()).is_none() {
            return false;
        }
        self.enqueue_push(
            ConnKey {
                slot: id.slot(),
                generation: id.generation(),
            },
            frame,
        )
    }

    /// Queues `frame` for one open session, enforcing the outbound bound (a slow consumer is
    /// cut off and counted), then flushes.
    fn enqueue_push(&mut self, entry: ConnKey, frame: &Bytes) -> bool {
        let max_outbound_bytes = self.limits.max_outbound_bytes;
        let (conns, mut cx) = self.session_parts(entry.slot);
        let Some(conn) = conns.get_mut(entry) else {
            return false;
        };
        if conn.state != SessionState::Open {
            return false;
        }
        let queued_bytes = conn.outbound.as_ref().map_or(0, |out| out.total_bytes());
        if queued_bytes + frame.len() > max_outbound_bytes {
            let verdict =
                session::cut_slow_consumer(conn, &mut cx, "outbound queue full: read your pushes");
            if let Verdict::Close(reason) = verdict {
                self.begin_close(entry.slot, reason);
            }
            return false;
        }
        cx.queue_shared(conn, frame.clone());
        cx.counters.pushes_delivered += 1;
        self.flush(entry.slot);
        true
    }

    /// Moves parked events into the pipeline while it has room; acks them and resumes reading
    /// for connections whose last parked event went in.
    pub(super) fn unpark_events(&mut self) {
        if self.push.events.parked_len() == 0 {
            return;
        }
        let mut moved: Vec<(ConnId, Option<u64>, bool)> = Vec::new();
        self.push
            .events
            .unpark(|conn, ack_id, last| moved.push((conn, ack_id, last)));
        for (id, ack_id, last) in moved {
            self.counters.events_accepted += 1;
            let (conns, mut cx) = self.session_parts(id.slot());
            let Some(conn) = conns.get_mut(id.key()) else {
                continue;
            };
            if let Some(ack_id) = ack_id {
                session::push::queue_ack(conn, &mut cx, ack_id);
            }
            if last {
                self.resume_reading(id.key());
            }
            self.flush(id.slot());
        }
    }

    /// A reason to pause reading went away (the last parked event was taken, or the replies
    /// drained): read again unless the other reason still holds. Bytes held since the pause are
    /// fed first (they may pause it again), then the socket is read if it had more.
    pub(super) fn resume_reading(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.flags.has(ConnFlags::REPLIES_PAUSED)
            || self.push.events.has_parked(key.id(self.index))
        {
            return;
        }
        conn.flags.clear(ConnFlags::READ_PAUSED);
        if let Some((generation, bytes)) = self.held_input.remove(&key.slot) {
            debug_assert_eq!(generation, key.generation);
            self.on_bytes(key.slot, super::io::Input::Held(bytes));
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.flags.has(ConnFlags::READ_AGAIN)
            && !conn
                .flags
                .has(ConnFlags::RECV_IN_FLIGHT | ConnFlags::READ_PAUSED)
        {
            self.start_recv(key.slot);
        }
    }
}
