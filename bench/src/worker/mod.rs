//! A worker process: one thread, one mio (epoll) loop, up to ~15,000 sessions in a slab
//! (`Vec<Session>`, token = index). No task or thread per connection. The parent starts it as
//! `holdfast-bench __worker <plan json>`, sends commands on stdin and reads reports on stdout.

mod session;
pub mod template;
mod wake_timer;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use holdfast_protocol::{encode_frame, encode_raw, payload, token, Header, Kind, HEADER_BYTES};
use mio::{Events, Interest, Poll, Token};

use crate::clock::{mono_ns, process_cpu_ns, NS_PER_MS, NS_PER_S, NS_PER_US};
use crate::hist::{self, Hist};
use crate::msg::{self, Command, Counters, Final, Phases, Report, StormMode, WorkerPlan, Workload};
use crate::schedule::{OpenLoop, RateSchedule};
use crate::sockets;
use crate::transport::{Conn, Connector, TransportKind};
use session::{FrameOutcome, Session, State};
use template::Template;
use wake_timer::WakeTimer;

const STDIN_TOKEN: Token = Token(usize::MAX - 1);
const WAKE_TIMER_TOKEN: Token = Token(usize::MAX - 2);
/// Bytes read per recv into the worker's one scratch buffer.
const READ_SCRATCH_BYTES: usize = 256 * 1024;
const EVENTS_CAPACITY: usize = 4096;
/// How often setup progress is reported.
const PROGRESS_INTERVAL_MS: u64 = 200;
/// Upper bound on one poll wait, so timers are looked at at least this often.
const POLL_TIMEOUT_MAX_MS: u64 = 50;
/// Idle sessions are checked for a due Ping in slices this often.
const PING_SWEEP_INTERVAL_MS: u64 = 100;
/// Hard upper bound on sessions in one worker (stays well under RLIMIT_NOFILE 20,000).
pub const SESSIONS_PER_WORKER_MAX: u32 = 15_000;

/// Latency histograms of one worker, merged by the parent.
struct Histograms {
    latency: Hist,
    interval: Hist,
    connect: Hist,
    handshake: Hist,
    setup: Hist,
    reconnect: Hist,
    send_lag: Hist,
}

impl Histograms {
    fn new() -> Histograms {
        Histograms {
            latency: hist::new_hist(),
            interval: hist::new_hist(),
            connect: hist::new_hist(),
            handshake: hist::new_hist(),
            setup: hist::new_hist(),
            reconnect: hist::new_hist(),
            send_lag: hist::new_hist(),
        }
    }
}

pub struct Worker {
    plan: WorkerPlan,
    poll: Poll,
    /// Wakes the epoll loop at the next deadline to the nanosecond (epoll_wait rounds to ms).
    wake_timer: WakeTimer,
    sessions: Vec<Session>,
    counters: Counters,
    hists: Histograms,
    template: Template,
    /// The transport every session speaks (tcp, tls, ws, wss).
    connector: Connector,
    scratch: Vec<u8>,
    frame_scratch: BytesMut,
    /// Sessions waiting to (re)connect, by earliest start time.
    to_open: BinaryHeap<Reverse<(u64, usize)>>,
    /// Connect/handshake deadlines in start order: (deadline_ns, session, attempt).
    deadlines: VecDeque<(u64, usize, u32)>,
    connecting: u32,
    connect_pacer: Option<(RateSchedule, u64)>,
    setup_resolved: u32,
    ready_sent: bool,
    phases: Option<Phases>,
    traffic_started: bool,
    open_loop: Option<OpenLoop>,
    open_loop_issued: u64,
    inflight_total: u64,
    tick_index: u64,
    cpu_at_measure_start_ns: Option<u64>,
    cpu_at_measure_end_ns: Option<u64>,
    stopping_since_ns: Option<u64>,
    ping_interval_ms: u64,
    ping_cursor: usize,
    next_ping_sweep_ns: u64,
    next_progress_ns: u64,
    storm_expected: u64,
    storm_first_drop_ns: Option<u64>,
    stop_requested: bool,
    stdin_buf: Vec<u8>,
    dirty: Vec<usize>,
    completed: Vec<session::Inflight>,
}

/// Runs a worker to completion. Returns when the Final report has been written.
pub fn run(plan: WorkerPlan) -> Result<()> {
    let mut worker = Worker::new(plan)?;
    worker.run()
}

impl Worker {
    fn new(plan: WorkerPlan) -> Result<Worker> {
        anyhow::ensure!(
            plan.sessions <= SESSIONS_PER_WORKER_MAX,
            "worker sessions above {SESSIONS_PER_WORKER_MAX}"
        );
        anyhow::ensure!(plan.sessions > 0, "a worker needs at least one session");
        let kind = if plan.workload == Workload::Request {
            Kind::Request
        } else {
            Kind::Echo
        };
        let mut template = Template::new(
            kind,
            &plan.method,
            plan.payload_bytes as usize,
            plan.max_frame_bytes,
        );
        if plan.workload == Workload::Push {
            anyhow::ensure!(
                !plan.raw,
                "push needs sessions (Hello, Subscribe): not --raw"
            );
            template = template.with_push_stream(&plan.push_stream);
        }
        if plan.workload == Workload::Events {
            anyhow::ensure!(!plan.raw, "events needs sessions (Hello): not --raw");
            let frame = crate::events::event_frame(
                &plan.event_topic,
                plan.payload_bytes as usize,
                plan.event_ack,
                plan.max_frame_bytes,
            )?;
            template = Template::events(frame, plan.max_frame_bytes);
        }
        anyhow::ensure!(
            template.request_bytes() <= plan.max_frame_bytes as usize,
            "a request frame of {} bytes exceeds max_frame_bytes {}",
            template.request_bytes(),
            plan.max_frame_bytes
        );
        let connector = Connector::new(&plan.transport, plan.target)?;
        let poll = Poll::new().context("epoll_create")?;
        set_nonblocking(0)?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&0),
                STDIN_TOKEN,
                Interest::READABLE,
            )
            .context("register stdin")?;
        let wake_timer = WakeTimer::new().context("timerfd_create")?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&wake_timer.raw_fd()),
                WAKE_TIMER_TOKEN,
                Interest::READABLE,
            )
            .context("register the wake timer")?;
        let now = mono_ns();
        let sessions: Vec<Session> = (0..plan.sessions)
            .map(|_| Session::new(plan.max_frame_bytes))
            .collect();
        let to_open = (0..sessions.len()).map(|i| Reverse((0, i))).collect();
        let connect_pacer = (plan.connect_rate_per_s > 0)
            .then(|| (RateSchedule::new(now, plan.connect_rate_per_s), 0));
        Ok(Worker {
            ping_interval_ms: plan.ping_interval_ms.max(1),
            plan,
            poll,
            wake_timer,
            sessions,
            counters: Counters::default(),
            hists: Histograms::new(),
            template,
            connector,
            scratch: vec![0; READ_SCRATCH_BYTES],
            frame_scratch: BytesMut::with_capacity(1024),
            to_open,
            deadlines: VecDeque::new(),
            connecting: 0,
            connect_pacer,
            setup_resolved: 0,
            ready_sent: false,
            phases: None,
            traffic_started: false,
            open_loop: None,
            open_loop_issued: 0,
            inflight_total: 0,
            tick_index: 0,
            cpu_at_measure_start_ns: None,
            cpu_at_measure_end_ns: None,
            stopping_since_ns: None,
            ping_cursor: 0,
            next_ping_sweep_ns: now,
            next_progress_ns: now,
            storm_expected: 0,
            storm_first_drop_ns: None,
            stop_requested: false,
            stdin_buf: Vec::new(),
            dirty: Vec::new(),
            completed: Vec::new(),
        })
    }

    fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let now = mono_ns();
            if self.step(now)? {
                break;
            }
            self.flush_dirty(now);
            let wake_ns = self.next_wake_ns(now);
            let timeout_ns = wake_ns
                .saturating_sub(now)
                .min(POLL_TIMEOUT_MAX_MS * NS_PER_MS);
            if timeout_ns > 0 && timeout_ns < POLL_TIMEOUT_MAX_MS * NS_PER_MS {
                // On time to the nanosecond; the epoll timeout (whole ms) is the backstop.
                self.wake_timer.arm_at(wake_ns).context("timerfd_settime")?;
            }
            match self
                .poll
                .poll(&mut events, Some(Duration::from_nanos(timeout_ns)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("epoll_wait"),
            }
            let now = mono_ns();
            for event in events.iter() {
                if event.token() == STDIN_TOKEN {
                    self.read_commands()?;
                } else if event.token() == WAKE_TIMER_TOKEN {
                    self.wake_timer.on_fired();
                } else {
                    self.on_socket_event(event.token().0, event.is_writable(), now);
                }
            }
            self.flush_dirty(now);
        }
        self.finish()
    }

    /// Timers and phase changes. Returns true when the worker is done.
    fn step(&mut self, now: u64) -> Result<bool> {
        if self.stop_requested {
            self.cpu_at_measure_end_ns
                .get_or_insert_with(process_cpu_ns);
            return Ok(true);
        }
        self.expire_deadlines(now);
        self.start_connects(now);
        let Some(phases) = self.phases else {
            self.report_setup(now)?;
            self.ping_sweep(now);
            return Ok(false);
        };
        if now >= phases.warmup_start_ns && !self.traffic_started {
            self.start_traffic(now, phases);
        }
        if now >= phases.measure_start_ns && self.cpu_at_measure_start_ns.is_none() {
            self.cpu_at_measure_start_ns = Some(process_cpu_ns());
        }
        if let Some(drop_at) = phases.drop_at_ns {
            if now >= drop_at && self.storm_first_drop_ns.is_none() {
                self.drop_all(now);
            }
        }
        self.dispatch_open_loop(now);
        self.emit_ticks(now, phases)?;
        if !self.plan.workload.sends_traffic() {
            self.ping_sweep(now);
        }
        if self.plan.workload == Workload::Storm && self.storm_done() {
            return Ok(true);
        }
        if now >= phases.measure_end_ns {
            self.cpu_at_measure_end_ns
                .get_or_insert_with(process_cpu_ns);
            let since = *self.stopping_since_ns.get_or_insert(now);
            let drain_over = now >= since + self.plan.drain_ms * NS_PER_MS;
            if self.plan.workload == Workload::Push {
                // Pushes published just before the end are still on their way: wait them out.
                return Ok(drain_over);
            }
            let drained = self.inflight_total == 0 || drain_over;
            return Ok(drained || !self.plan.workload.sends_traffic());
        }
        Ok(false)
    }

    /// The earliest time something is due: a connect, a deadline, a tick, a scheduled request.
    fn next_wake_ns(&self, now: u64) -> u64 {
        if !self.dirty.is_empty() {
            return now; // events stream: sessions that took everything want more at once
        }
        let mut wake = now + POLL_TIMEOUT_MAX_MS * NS_PER_MS;
        if let Some(Reverse((at, _))) = self.to_open.peek() {
            if self.connecting < self.plan.connect_concurrency_max {
                let paced = self
                    .connect_pacer
                    .map_or(*at, |(s, started)| s.intended_ns(started).max(*at));
                wake = wake.min(paced);
            }
        }
        if let Some((deadline, _, _)) = self.deadlines.front() {
            wake = wake.min(*deadline);
        }
        if let Some(phases) = self.phases {
            let tick_end = phases.warmup_start_ns + (self.tick_index + 1) * NS_PER_S;
            wake = wake.min(tick_end);
            if let Some(ol) = &self.open_loop {
                let next = ol.schedule.intended_ns(self.open_loop_issued);
                if next < phases.measure_end_ns {
                    wake = wake.min(next);
                }
            }
            let boundaries = [
                phases.warmup_start_ns,
                phases.measure_start_ns,
                phases.measure_end_ns,
            ];
            for t in boundaries.into_iter().chain(phases.drop_at_ns) {
                if t > now {
                    wake = wake.min(t);
                }
            }
        }
        wake.max(now)
    }

    // ---- setup: connects, handshakes, deadlines -------------------------------------------

    fn start_connects(&mut self, now: u64) {
        while self.connecting < self.plan.connect_concurrency_max {
            let Some(&Reverse((at, idx))) = self.to_open.peek() else {
                return;
            };
            if at > now {
                return;
            }
            if let Some((schedule, started)) = &mut self.connect_pacer {
                if schedule.due_count(now) <= *started {
                    return;
                }
                *started += 1;
            }
            self.to_open.pop();
            self.open_session(idx, now);
        }
    }

    fn open_session(&mut self, idx: usize, now: u64) {
        let source = sockets::source_addr(
            self.plan.target,
            self.plan.first_session_index + idx as u64,
            self.plan.sessions_per_source_addr,
        );
        self.counters.connect_attempts += 1;
        let session = &mut self.sessions[idx];
        session.attempt += 1;
        session.connect_started_ns = now;
        match sockets::start_connect(self.plan.target, source) {
            Ok(stream) => {
                let mut stream = Conn::new(stream);
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.connect_failed(idx, &e, now);
                    return;
                }
                session.stream = Some(stream);
                session.state = State::Connecting;
                self.connecting += 1;
                let deadline = now + self.plan.handshake_timeout_ms * NS_PER_MS;
                self.deadlines.push_back((deadline, idx, session.attempt));
            }
            Err(e) => self.connect_failed(idx, &e, now),
        }
    }

    fn connect_failed(&mut self, idx: usize, e: &io::Error, now: u64) {
        *self
            .counters
            .connect_failed
            .entry(sockets::error_name(e))
            .or_default() += 1;
        self.abandon_attempt(idx, now);
    }

    /// A connect or handshake failed: retry (storm) or give the session up (setup).
    fn abandon_attempt(&mut self, idx: usize, now: u64) {
        let was_pending = matches!(
            self.sessions[idx].state,
            State::Connecting | State::Handshaking
        );
        if was_pending {
            self.connecting -= 1;
        }
        self.drop_stream(idx);
        let session = &mut self.sessions[idx];
        session.link.out.clear();
        session.decoder.reset(0);
        let retrying =
            session.dropped_ns.is_some() && self.phases.is_some_and(|p| now < p.measure_end_ns);
        if retrying {
            session.state = State::Idle;
            self.to_open
                .push(Reverse((now + self.plan.retry_backoff_ms * NS_PER_MS, idx)));
        } else {
            session.state = State::Closed;
            if self.phases.is_none() {
                self.setup_resolved += 1;
            }
        }
    }

    fn expire_deadlines(&mut self, now: u64) {
        while let Some(&(deadline, idx, attempt)) = self.deadlines.front() {
            if deadline > now {
                return;
            }
            self.deadlines.pop_front();
            let session = &self.sessions[idx];
            if session.attempt != attempt {
                continue;
            }
            let cause = match session.state {
                State::Connecting => "connect_timeout",
                State::Handshaking => "handshake_timeout",
                _ => continue,
            };
            *self
                .counters
                .connect_failed
                .entry(cause.into())
                .or_default() += 1;
            self.abandon_attempt(idx, now);
        }
    }

    fn on_connected(&mut self, idx: usize, now: u64) {
        self.counters.connected += 1;
        let session = &mut self.sessions[idx];
        if let Some(conn) = session.stream.as_mut() {
            // TLS and WebSocket handshakes run on the next reads and writes; the Hello waits.
            if let Err(e) = self.connector.start(conn) {
                return self.connect_failed(idx, &e, now);
            }
        }
        session.connected_ns = now;
        let connect_us = (now - session.connect_started_ns) / NS_PER_US;
        self.counters.samples_clamped +=
            u64::from(hist::record_clamped(&mut self.hists.connect, connect_us));
        if self.plan.raw {
            self.on_opened(idx, now);
            return;
        }
        session.state = State::Handshaking;
        let hello_id = session.link.take_id();
        self.frame_scratch.clear();
        match &self.plan.auth {
            None => {
                encode_raw(
                    &mut self.frame_scratch,
                    Kind::Hello,
                    0,
                    hello_id,
                    &[],
                    self.plan.max_frame_bytes,
                )
                .expect("an empty Hello always fits");
            }
            Some(auth) => {
                let client_id = format!(
                    "{}{}",
                    auth.client_id_prefix,
                    self.plan.first_session_index + idx as u64
                );
                let expiry = unix_now_s() + auth.token_ttl_s;
                let token = token::sign(&auth.secret, &client_id, expiry);
                let hello = payload::Hello {
                    client_id: &client_id,
                    token: &token,
                    versions: &[holdfast_protocol::VERSION],
                    heartbeat_ms: self.plan.ping_interval_ms as u32,
                };
                encode_frame(
                    &mut self.frame_scratch,
                    0,
                    hello_id,
                    &hello,
                    self.plan.max_frame_bytes,
                )
                .expect("a Hello with a client id under 256 bytes fits");
            }
        }
        session.link.out.extend_from_slice(&self.frame_scratch);
        self.mark_dirty(idx);
    }

    fn on_opened(&mut self, idx: usize, now: u64) {
        self.connecting -= 1;
        self.counters.sessions_opened += 1;
        self.counters.sessions_open += 1;
        let session = &mut self.sessions[idx];
        session.state = State::Open;
        session.link.last_tx_ns = now;
        let setup_us = (now - session.connect_started_ns) / NS_PER_US;
        let handshake_us = (now - session.connected_ns) / NS_PER_US;
        let mut clamped = hist::record_clamped(&mut self.hists.setup, setup_us);
        if !self.plan.raw {
            clamped |= hist::record_clamped(&mut self.hists.handshake, handshake_us);
        }
        if let Some(dropped) = session.dropped_ns.take() {
            clamped |= hist::record_clamped(&mut self.hists.reconnect, (now - dropped) / NS_PER_US);
            self.counters.storm_back += 1;
            if self.storm_done() {
                let first = self.storm_first_drop_ns.unwrap_or(dropped);
                self.counters.storm_all_back_ms = Some((now - first) / NS_PER_MS);
            }
        }
        self.counters.samples_clamped += u64::from(clamped);
        if self.plan.workload == Workload::Push {
            // Setup of this session ends with the Subscribe's Ack (or Error).
            self.subscribe(idx);
        } else if self.phases.is_none() {
            self.setup_resolved += 1;
        }
        if self.traffic_started {
            self.top_up(idx, now);
        }
    }

    /// push: subscribes session `idx` to the plan's topic.
    fn subscribe(&mut self, idx: usize) {
        let link = &mut self.sessions[idx].link;
        let id = link.take_id();
        link.subscribe_id = Some(id);
        self.frame_scratch.clear();
        let topics = [payload::TopicName {
            name: &self.plan.push_topic,
        }];
        encode_frame(
            &mut self.frame_scratch,
            0,
            id,
            &payload::Subscribe { topics: &topics },
            self.plan.max_frame_bytes,
        )
        .expect("a Subscribe to one topic fits max_frame_bytes");
        link.out.extend_from_slice(&self.frame_scratch);
        self.counters.push_subscribes_sent += 1;
        self.mark_dirty(idx);
    }

    /// push: the Subscribe of session `idx` was answered.
    fn on_subscribed(&mut self, idx: usize, acked: bool) {
        if acked {
            self.counters.push_subscribed += 1;
            self.sessions[idx].link.subscribed = true;
        } else {
            self.counters.push_subscribe_failed += 1;
        }
        if self.phases.is_none() {
            self.setup_resolved += 1;
        }
    }

    fn report_setup(&mut self, now: u64) -> Result<()> {
        if self.ready_sent {
            return Ok(());
        }
        if self.setup_resolved >= self.plan.sessions {
            self.ready_sent = true;
            return send(&Report::Ready {
                worker: self.plan.worker_index,
                counters: self.counters.clone(),
            });
        }
        if now >= self.next_progress_ns {
            self.next_progress_ns = now + PROGRESS_INTERVAL_MS * NS_PER_MS;
            return send(&Report::Progress {
                worker: self.plan.worker_index,
                counters: self.counters.clone(),
            });
        }
        Ok(())
    }

    // ---- traffic ---------------------------------------------------------------------------

    fn start_traffic(&mut self, now: u64, phases: Phases) {
        self.traffic_started = true;
        self.tick_index = 0;
        self.hists.interval.reset();
        match self.plan.workload {
            Workload::Echo | Workload::Events => {
                for idx in 0..self.sessions.len() {
                    self.top_up(idx, now);
                }
            }
            Workload::Rate | Workload::Request => {
                let schedule =
                    RateSchedule::new(phases.warmup_start_ns, self.plan.rate_per_s.max(1));
                self.open_loop = Some(OpenLoop::new(schedule, self.sessions.len() as u64));
            }
            Workload::Storm => {
                self.storm_expected = self.counters.sessions_open;
            }
            Workload::Connect | Workload::Push => {}
        }
    }

    fn sending_allowed(&self, now: u64) -> bool {
        self.phases.is_some_and(|p| now < p.measure_end_ns) && self.traffic_started
    }

    /// Sends what a session may send now: closed loop up to K in flight; open loop its owed
    /// requests up to K in flight.
    fn top_up(&mut self, idx: usize, now: u64) {
        if !self.sending_allowed(now) || self.sessions[idx].state != State::Open {
            return;
        }
        let k = self.plan.inflight_per_session as usize;
        let open_loop = self.open_loop;
        let measuring = self.phases.is_some_and(|p| now >= p.measure_start_ns);
        let session = &mut self.sessions[idx];
        let link = &mut session.link;
        let mut sent = 0u64;
        match (self.plan.workload, open_loop) {
            (Workload::Events, _) if !self.plan.event_ack => {
                // Streaming: keep at most K Event frames queued in the write buffer.
                let frame_bytes = self.template.event_frame_bytes();
                if frame_bytes == 0 {
                    return; // not an Event template (Worker::new always makes one for events)
                }
                let mut queued = 0u64;
                while link.out.len() + frame_bytes <= k * frame_bytes {
                    let id = link.take_id();
                    self.template.write_request(id, &mut link.out);
                    queued += 1;
                }
                if queued > 0 {
                    self.counters.events_streamed += queued;
                    if measuring {
                        self.counters.events_sent_measured += queued;
                    }
                    self.mark_dirty(idx);
                }
                return;
            }
            (Workload::Echo | Workload::Events, _) => {
                while link.inflight.len() < k {
                    let id = link.take_id();
                    self.template.write_request(id, &mut link.out);
                    link.inflight
                        .push_back(session::Inflight { id, origin_ns: now });
                    sent += 1;
                }
            }
            (Workload::Rate | Workload::Request, Some(ol)) => {
                while link.owed > 0 && link.inflight.len() < k {
                    let intended = ol.intended_ns(idx as u64, link.sent_j);
                    let lag_us = now.saturating_sub(intended) / NS_PER_US;
                    hist::record_clamped(&mut self.hists.send_lag, lag_us);
                    let id = link.take_id();
                    self.template.write_request(id, &mut link.out);
                    link.inflight.push_back(session::Inflight {
                        id,
                        origin_ns: intended,
                    });
                    link.sent_j += 1;
                    link.owed -= 1;
                    sent += 1;
                }
            }
            _ => {}
        }
        if sent > 0 {
            if measuring && self.plan.workload == Workload::Events {
                self.counters.events_sent_measured += sent;
            }
            self.counters.requests_sent += sent;
            self.inflight_total += sent;
            self.mark_dirty(idx);
        }
    }

    /// Hands every request that fell due (and was not handed out yet) to its session.
    fn dispatch_open_loop(&mut self, now: u64) {
        let (Some(ol), Some(phases)) = (self.open_loop, self.phases) else {
            return;
        };
        let end = now.min(phases.measure_end_ns.saturating_sub(1));
        let due = ol.schedule.due_count(end);
        while self.open_loop_issued < due {
            let idx = ol.session_of(self.open_loop_issued) as usize;
            self.open_loop_issued += 1;
            self.sessions[idx].link.owed += 1;
            if self.sessions[idx].link.owed == 1 {
                self.top_up(idx, now);
            }
        }
    }

    fn record_completed(&mut self, now: u64) {
        let phases = self.phases;
        let push = self.plan.workload == Workload::Push;
        if push && !self.completed.is_empty() {
            // Deliveries: measured at the moment they are decoded, not at the epoll wake-up
            // (one wake-up can carry thousands of sessions' deliveries).
            let now = mono_ns();
            self.counters.push_last_delivery_ns = Some(now);
            for delivery in self.completed.drain(..) {
                let latency_us = now.saturating_sub(delivery.origin_ns) / NS_PER_US;
                let mut clamped = hist::record_clamped(&mut self.hists.interval, latency_us);
                if let Some(p) = phases {
                    if now >= p.measure_start_ns && now < p.measure_end_ns {
                        self.counters.replies_measured += 1;
                    }
                    // The histogram holds every delivery of a publish stamped inside the window,
                    // those arriving during the drain too.
                    if delivery.origin_ns >= p.measure_start_ns
                        && delivery.origin_ns < p.measure_end_ns
                    {
                        clamped |= hist::record_clamped(&mut self.hists.latency, latency_us);
                    }
                }
                self.counters.samples_clamped += u64::from(clamped);
            }
            return;
        }
        for request in self.completed.drain(..) {
            self.inflight_total -= 1;
            let latency_us = now.saturating_sub(request.origin_ns) / NS_PER_US;
            let mut clamped = hist::record_clamped(&mut self.hists.interval, latency_us);
            if let Some(p) = phases {
                if now >= p.measure_start_ns && now < p.measure_end_ns {
                    self.counters.replies_measured += 1;
                    clamped |= hist::record_clamped(&mut self.hists.latency, latency_us);
                }
            }
            self.counters.samples_clamped += u64::from(clamped);
        }
    }

    fn emit_ticks(&mut self, now: u64, phases: Phases) -> Result<()> {
        let last_tick = (phases.measure_end_ns - phases.warmup_start_ns).div_ceil(NS_PER_S);
        while self.tick_index < last_tick
            && now >= phases.warmup_start_ns + (self.tick_index + 1) * NS_PER_S
        {
            let report = Report::Tick {
                worker: self.plan.worker_index,
                index: self.tick_index,
                counters: self.counters.clone(),
                histogram: hist::to_bytes(&self.hists.interval),
            };
            send(&report)?;
            self.hists.interval.reset();
            self.tick_index += 1;
        }
        Ok(())
    }

    fn ping_sweep(&mut self, now: u64) {
        if self.plan.raw || now < self.next_ping_sweep_ns {
            return;
        }
        self.next_ping_sweep_ns = now + PING_SWEEP_INTERVAL_MS * NS_PER_MS;
        let n = self.sessions.len();
        let slice = (n as u64 * PING_SWEEP_INTERVAL_MS).div_ceil(self.ping_interval_ms) as usize;
        for _ in 0..slice.min(n) {
            let idx = self.ping_cursor;
            self.ping_cursor = (self.ping_cursor + 1) % n;
            let session = &mut self.sessions[idx];
            let link = &mut session.link;
            let idle_ns = now.saturating_sub(link.last_tx_ns);
            if session.state == State::Open && idle_ns >= self.ping_interval_ms * NS_PER_MS / 2 {
                let id = link.take_id();
                push_empty(&mut link.out, Kind::Ping, id);
                self.counters.pings_sent += 1;
                self.mark_dirty(idx);
            }
        }
    }

    // ---- storm -------------------------------------------------------------------------------

    fn drop_all(&mut self, now: u64) {
        self.storm_first_drop_ns = Some(now);
        let reset = self.plan.storm_mode == StormMode::ClientReset;
        for idx in 0..self.sessions.len() {
            if self.sessions[idx].state != State::Open {
                continue;
            }
            if reset {
                if let Some(stream) = &self.sessions[idx].stream {
                    let _ = sockets::set_reset_on_close(stream.tcp());
                }
            }
            self.close_session(idx, now, Some(0));
        }
    }

    fn storm_done(&self) -> bool {
        self.storm_first_drop_ns.is_some() && self.counters.storm_back >= self.storm_expected
    }

    // ---- sockets -----------------------------------------------------------------------------

    fn on_socket_event(&mut self, idx: usize, writable: bool, now: u64) {
        let Some(session) = self.sessions.get(idx) else {
            return;
        };
        match session.state {
            State::Connecting => self.check_connect(idx, now),
            State::Handshaking | State::Open => {
                // A TLS or WebSocket read may have finished a handshake or left records and
                // control frames to send: look at the session's writes after every event.
                if writable || self.connector.kind() != TransportKind::Tcp {
                    self.mark_dirty(idx);
                }
                self.read_session(idx, now);
            }
            State::Idle | State::Closed => {}
        }
    }

    fn check_connect(&mut self, idx: usize, now: u64) {
        let Some(stream) = &self.sessions[idx].stream else {
            return;
        };
        let stream = stream.tcp();
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return self.connect_failed(idx, &e, now),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => self.on_connected(idx, now),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {} // still in progress
            Err(e) => self.connect_failed(idx, &e, now),
        }
    }

    fn read_session(&mut self, idx: usize, now: u64) {
        let mut outcome = FrameOutcome::default();
        loop {
            let session = &mut self.sessions[idx];
            let Some(stream) = session.stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut self.scratch) {
                Ok(0) => return self.lost_connection(idx, "closed_by_server".into(), now),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.lost_connection(idx, sockets::error_name(&e), now),
            };
            let state = session.state;
            let Session { decoder, link, .. } = session;
            let (template, counters, completed) =
                (&self.template, &mut self.counters, &mut self.completed);
            let fed = decoder.feed(&self.scratch[..n], |frame| {
                link.on_frame(frame, state, template, counters, completed, &mut outcome);
                if outcome.changes_state() {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            });
            match fed {
                Err(_) => {
                    self.counters.decode_errors += 1;
                    self.record_completed(now);
                    return self.close_session(idx, now, None);
                }
                Ok(holdfast_protocol::decode::Fed::Stopped { consumed }) => {
                    // A state change: apply it, then feed the rest of this read.
                    self.record_completed(now);
                    if !self.apply_outcome(idx, &mut outcome, now) {
                        return;
                    }
                    let rest = self.scratch[consumed..n].to_vec(); // rare: once per session open
                    if !self.feed_rest(idx, &rest, now) {
                        return;
                    }
                }
                Ok(holdfast_protocol::decode::Fed::All) => {}
            }
            // A short read of a TCP socket drained it; the other transports read until
            // WouldBlock (one TLS record or WebSocket message per read).
            if n < self.scratch.len() && self.connector.kind() == TransportKind::Tcp {
                break;
            }
        }
        self.record_completed(now);
        if !self.sessions[idx].link.pongs_owed.is_empty() {
            self.mark_dirty(idx);
        }
        self.top_up(idx, now);
    }

    /// Feeds bytes left over after a state change (at most one read's worth). Returns false if
    /// the session closed.
    fn feed_rest(&mut self, idx: usize, rest: &[u8], now: u64) -> bool {
        let mut offset = 0;
        while offset < rest.len() {
            let mut outcome = FrameOutcome::default();
            let session = &mut self.sessions[idx];
            let state = session.state;
            let Session { decoder, link, .. } = session;
            let (template, counters, completed) =
                (&self.template, &mut self.counters, &mut self.completed);
            let fed = decoder.feed(&rest[offset..], |frame| {
                link.on_frame(frame, state, template, counters, completed, &mut outcome);
                if outcome.changes_state() {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            });
            self.record_completed(now);
            match fed {
                Err(_) => {
                    self.counters.decode_errors += 1;
                    self.close_session(idx, now, None);
                    return false;
                }
                Ok(holdfast_protocol::decode::Fed::All) => offset = rest.len(),
                Ok(holdfast_protocol::decode::Fed::Stopped { consumed }) => offset += consumed,
            }
            if !self.apply_outcome(idx, &mut outcome, now) {
                return false;
            }
        }
        true
    }

    /// Applies a Welcome, Goodbye or close. Returns false if the session closed.
    fn apply_outcome(&mut self, idx: usize, outcome: &mut FrameOutcome, now: u64) -> bool {
        if let Some(heartbeat_ms) = outcome.heartbeat_ms.take() {
            if heartbeat_ms > 0 {
                self.ping_interval_ms = self.ping_interval_ms.min(heartbeat_ms);
            }
        }
        if std::mem::take(&mut outcome.opened) {
            self.on_opened(idx, now);
        }
        if let Some(acked) = outcome.subscribed.take() {
            self.on_subscribed(idx, acked);
        }
        if let Some(after_ms) = outcome.goodbye_reconnect_after_ms.take() {
            let reconnect = self.plan.workload == Workload::Storm;
            self.storm_first_drop_ns.get_or_insert(now);
            self.close_session(idx, now, reconnect.then_some(after_ms));
            return false;
        }
        if std::mem::take(&mut outcome.close) {
            let handshaking = self.sessions[idx].state == State::Handshaking;
            if handshaking {
                *self
                    .counters
                    .connect_failed
                    .entry("refused_by_server".into())
                    .or_default() += 1;
                self.abandon_attempt(idx, now);
            } else {
                self.close_session(idx, now, None);
            }
            return false;
        }
        true
    }

    /// The server closed the connection (`cause` "closed_by_server") or it failed with an I/O
    /// error. During a handshake that is a failed session setup.
    fn lost_connection(&mut self, idx: usize, cause: String, now: u64) {
        if self.sessions[idx].state == State::Handshaking {
            *self
                .counters
                .connect_failed
                .entry(format!("handshake_{cause}"))
                .or_default() += 1;
            return self.abandon_attempt(idx, now);
        }
        if cause == "closed_by_server" {
            self.counters.closed_by_server += 1;
        } else {
            *self.counters.io_errors.entry(cause).or_default() += 1;
        }
        let reconnect =
            (self.plan.workload == Workload::Storm).then_some(self.plan.retry_backoff_ms);
        let reconnect = reconnect.filter(|_| self.plan.storm_mode == StormMode::Goodbye);
        if reconnect.is_some() {
            // A connection lost without a Goodbye (the server was killed) starts the storm's
            // clock too, so "all back after" is measured from the first loss.
            self.storm_first_drop_ns.get_or_insert(now);
        }
        self.close_session(idx, now, reconnect);
    }

    /// Closes a session's socket. `reconnect_after_ms`: storm reconnects it after that delay.
    fn close_session(&mut self, idx: usize, now: u64, reconnect_after_ms: Option<u64>) {
        let session = &mut self.sessions[idx];
        match session.state {
            State::Open => self.counters.sessions_open -= 1,
            State::Connecting | State::Handshaking => {
                self.connecting -= 1;
                if self.phases.is_none() {
                    self.setup_resolved += 1;
                }
            }
            State::Idle | State::Closed => {}
        }
        if session.link.subscribe_id.take().is_some() && self.phases.is_none() {
            self.setup_resolved += 1; // its Subscribe will never be answered
        }
        let lost = session.link.inflight.len() as u64;
        self.counters.requests_lost += lost;
        self.inflight_total -= lost;
        session.link.inflight.clear();
        session.link.out.clear();
        session.link.pongs_owed.clear();
        session.decoder.reset(0);
        self.drop_stream(idx);
        let session = &mut self.sessions[idx];
        let storm_reconnect = self.plan.workload == Workload::Storm
            && self.phases.is_some_and(|p| now < p.measure_end_ns)
            && (reconnect_after_ms.is_some() || self.plan.storm_mode == StormMode::Goodbye);
        if storm_reconnect && session.state == State::Open {
            session.dropped_ns = Some(now);
            self.counters.storm_dropped += 1;
        }
        if storm_reconnect {
            session.state = State::Idle;
            let after_ms = reconnect_after_ms.unwrap_or(self.plan.retry_backoff_ms);
            self.to_open
                .push(Reverse((now + after_ms * NS_PER_MS, idx)));
        } else {
            session.state = State::Closed;
        }
    }

    fn drop_stream(&mut self, idx: usize) {
        if let Some(mut stream) = self.sessions[idx].stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    fn mark_dirty(&mut self, idx: usize) {
        let link = &mut self.sessions[idx].link;
        if !link.dirty {
            link.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Writes every dirty session's pending bytes (one write each, usually).
    fn flush_dirty(&mut self, now: u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            self.flush(idx, now);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
        }
    }

    fn flush(&mut self, idx: usize, now: u64) {
        let session = &mut self.sessions[idx];
        session.link.dirty = false;
        let link = &mut session.link;
        for id in link.pongs_owed.drain(..) {
            push_empty(&mut link.out, Kind::Pong, id);
        }
        let Some(stream) = session.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        while written < link.out.len() {
            match stream.write(&link.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.lost_connection(idx, sockets::error_name(&e), now),
            }
        }
        if written > 0 {
            link.out.drain(..written);
            link.last_tx_ns = now;
        }
        if let Err(e) = stream.flush_pending() {
            return self.lost_connection(idx, sockets::error_name(&e), now);
        }
        let streaming = self.plan.workload == Workload::Events && !self.plan.event_ack;
        if streaming && link.out.is_empty() {
            // The socket took everything: queue the next K (marks the session dirty again, so
            // it is written after the next poll, which then does not wait).
            self.top_up(idx, now);
        }
    }

    // ---- parent link -----------------------------------------------------------------------

    fn read_commands(&mut self) -> Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match io::stdin().lock().read(&mut buf) {
                Ok(0) => {
                    self.stop_requested = true; // the parent is gone
                    return Ok(());
                }
                Ok(n) => self.stdin_buf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("read stdin"),
            }
        }
        while let Some(pos) = self.stdin_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.stdin_buf.drain(..=pos).collect();
            match serde_json::from_slice::<Command>(&line).context("bad command from parent")? {
                Command::Go(phases) => self.phases = Some(phases),
                Command::Stop => self.stop_requested = true,
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut unsent = 0;
        let mut inflight = 0;
        for session in &self.sessions {
            unsent += session.link.owed;
            inflight += session.link.inflight.len() as u64;
        }
        self.counters.requests_unsent_at_end = unsent;
        if self.plan.workload == Workload::Events && !self.plan.event_ack {
            let frame_bytes = self.template.event_frame_bytes().max(1);
            self.counters.events_unsent_at_end = self
                .sessions
                .iter()
                // A frame cut by a partial write never reaches the server whole: unsent.
                .map(|s| s.link.out.len().div_ceil(frame_bytes) as u64)
                .sum();
        }
        for session in self.sessions.iter().filter(|s| s.link.subscribed) {
            match session.link.first_seq {
                Some(first) => {
                    self.counters.push_sessions_receiving += 1;
                    self.counters.push_first_seq_sum += first;
                    self.counters.push_last_seq_sum += session.link.last_seq;
                }
                None => self.counters.push_sessions_silent += 1,
            }
        }
        self.counters.requests_inflight_at_end = inflight;
        let cpu_ns_measured = match (self.cpu_at_measure_start_ns, self.cpu_at_measure_end_ns) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let h = &self.hists;
        let mut histograms = BTreeMap::new();
        for (name, hist) in [
            (msg::HIST_LATENCY, &h.latency),
            (msg::HIST_CONNECT, &h.connect),
            (msg::HIST_HANDSHAKE, &h.handshake),
            (msg::HIST_SETUP, &h.setup),
            (msg::HIST_RECONNECT, &h.reconnect),
            (msg::HIST_SEND_LAG, &h.send_lag),
        ] {
            histograms.insert(name.to_owned(), hist::to_bytes(hist));
        }
        let report = Final {
            worker: self.plan.worker_index,
            counters: self.counters.clone(),
            histograms,
            cpu_ns_measured,
        };
        send(&Report::Final(Box::new(report)))
    }
}

fn push_empty(out: &mut Vec<u8>, kind: Kind, id: u64) {
    let mut header_bytes = [0u8; HEADER_BYTES];
    Header::new(kind, 0, id).write(&mut header_bytes);
    out.extend_from_slice(&header_bytes);
}

fn send(report: &Report) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, report).context("write report")?;
    out.write_all(b"\n").context("write report")?;
    out.flush().context("write report")
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn set_nonblocking(fd: i32) -> Result<()> {
    // SAFETY: fcntl on fd 0 (our stdin, a pipe from the parent) with F_GETFL/F_SETFL reads and
    // sets file status flags only; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        anyhow::ensure!(
            flags >= 0,
            "fcntl(F_GETFL) on stdin: {}",
            io::Error::last_os_error()
        );
        anyhow::ensure!(
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0,
            "fcntl(F_SETFL) on stdin: {}",
            io::Error::last_os_error()
        );
    }
    Ok(())
}
