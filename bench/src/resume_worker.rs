//! One worker process of `storm --storm-mode goodbye --resume` ([`crate::resume_storm`]): holds
//! its share of the sessions (holdfast-client, tokio), counts what each receives, and answers
//! the parent over its stdin and stdout, one JSON line per message:
//!
//! - worker -> parent [`FromWorker::Ready`] once every session is subscribed;
//! - parent -> worker [`ToWorker::ServerDown`] once the drained server has exited: a session is
//!   back when it opens a session after that (so a reconnect to the old server does not count);
//! - worker -> parent [`FromWorker::Back`] as soon as every session is back (the parent notes
//!   the time it reads the line);
//! - parent -> worker [`ToWorker::Count`] with every accepted payload id by topic, after the
//!   run: the worker counts, per session, what it expected and what it received, answers
//!   [`FromWorker::Summary`] and exits (which closes its sessions).
//!
//! A process holds one descriptor per session and RLIMIT_NOFILE caps it (20,000 here), so the
//! parent gives each worker at most [`crate::worker::SESSIONS_PER_WORKER_MAX`] sessions, each
//! from its loopback source address ([`crate::sockets::source_addr`]) so that no address runs
//! out of ephemeral ports.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use holdfast_client::{Client, ClientConfig, ConnectionState, Incoming};
use serde::{Deserialize, Serialize};

/// Attempts at a session's first connect and subscribe before the worker gives up (the client
/// retries by itself only once a session was open).
const SETUP_ATTEMPTS_MAX: u32 = 5;
/// Pause between two setup attempts of one session.
const SETUP_RETRY_MS: u64 = 500;
/// How often the worker looks whether every session is back.
const BACK_POLL_MS: u64 = 10;
/// State changes kept per session (the first ones), reported for sessions that lost pushes
/// and for the last sessions back.
const STATE_EVENTS_MAX: usize = 48;
/// Characters of a connection state kept in a report.
const STATE_SUMMARY_CHARS: usize = 120;
/// Sessions that lost pushes reported in detail by one worker.
const LOSSY_SESSIONS_REPORTED_MAX: usize = 10;
/// The last sessions back reported in detail by one worker.
const SLOWEST_SESSIONS_REPORTED_MAX: usize = 3;

/// What one worker is given on its command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResumePlan {
    pub worker: u32,
    pub target: SocketAddr,
    /// Global index of the worker's first session; session i subscribes to topic i mod topics.
    pub first_session: u64,
    pub sessions: u32,
    pub topics: u32,
    pub topic_prefix: String,
    /// Sessions per loopback source address, by global session index.
    pub sessions_per_source_addr: u32,
    /// First connects and subscribes in progress at once.
    pub connect_concurrency: u32,
    pub reconnect_base_delay_ms: u64,
    pub reconnect_max_delay_ms: u64,
    pub push_buffer_max_items: usize,
}

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// The drained server has exited; the restarted one is not up yet.
    ServerDown,
    /// Accepted payload ids, by topic index: count and exit.
    Count { accepted: Vec<Vec<u64>> },
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Ready { sessions: u32 },
    Back,
    Summary(Box<WorkerSummary>),
}

/// One session that missed pushes, or was among the last back, with what its connection went
/// through.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionDetail {
    pub session: u64,
    pub topic: u32,
    /// When the worker first saw it back, ms after ServerDown (None: never).
    pub back_ms: Option<u64>,
    pub lost: u64,
    pub first_lost: u64,
    pub last_lost: u64,
    pub sessions_opened: u64,
    pub goodbyes_received: u64,
    pub gaps_reported: u64,
    pub pushes_dropped: u64,
    pub state: String,
    /// State changes, in ms relative to ServerDown (negative: before), the first ones.
    pub state_events: Vec<(i64, String)>,
}

/// What one worker counted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub worker: u32,
    pub sessions: u32,
    /// Accepted payloads times the sessions of their topic in this worker.
    pub expected: u64,
    /// Expected deliveries received at least once.
    pub delivered: u64,
    /// Copies received beyond the first.
    pub duplicated: u64,
    /// Of `duplicated`, copies with the same seq as the first (the server sent one push twice;
    /// the rest carried another seq: the payload was numbered twice).
    #[serde(default)]
    pub duplicated_same_seq: u64,
    pub lost: u64,
    /// Payloads received that were never accepted (must be 0).
    pub unexpected: u64,
    pub gaps_reported: u64,
    pub pushes_dropped: u64,
    /// Pushes the clients dropped while a topic's resume was asked again (answered
    /// `epoch = 0`: the owner shard did not answer in time); the retry replays them.
    #[serde(default)]
    pub pushes_awaiting_resume: u64,
    /// Sessions that opened a session after ServerDown.
    pub sessions_back: u64,
    /// Payload id -> sessions of this worker that never received it.
    pub lost_by_payload: BTreeMap<u64, u64>,
    /// Payload id -> copies received beyond the first, over this worker's sessions.
    pub duplicated_by_payload: BTreeMap<u64, u64>,
    /// Sessions not back, by connection state.
    pub not_back_states: BTreeMap<String, u64>,
    pub lossy_sessions: Vec<SessionDetail>,
    /// Time until back after ServerDown, ms, of the median and the last session of the worker.
    pub back_ms_median: Option<u64>,
    pub back_ms_max: Option<u64>,
    pub slowest_sessions: Vec<SessionDetail>,
}

/// What one session received: receipts of its topic's payload id `topic + k * topics` at
/// index k (ids are dealt round-robin over the topics), and its state changes.
#[derive(Default)]
struct Received {
    receipts: Vec<u32>,
    /// The seq payload k first came with (a copy with the same seq was sent twice; one with
    /// another seq was numbered twice: published twice, or replayed in another epoch).
    first_seqs: Vec<u64>,
    /// Copies beyond the first that carried the first copy's seq.
    duplicated_same_seq: u64,
    /// Payload ids that are not of this topic, or not numbers.
    foreign: u64,
    state_events: Vec<(Instant, String)>,
}

fn summarize(state: &ConnectionState) -> String {
    format!("{state:?}")
        .chars()
        .take(STATE_SUMMARY_CHARS)
        .collect()
}

fn send(message: &FromWorker) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, message)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn session_config(plan: &ResumePlan, index: u64) -> ClientConfig {
    let mut config = ClientConfig::tcp(plan.target.to_string());
    config.source_addr =
        crate::sockets::source_addr(plan.target, index, plan.sessions_per_source_addr);
    config.reconnect_base_delay_ms = plan.reconnect_base_delay_ms.max(1);
    config.reconnect_max_delay_ms = plan
        .reconnect_max_delay_ms
        .max(config.reconnect_base_delay_ms);
    config.push_buffer_max_items = plan.push_buffer_max_items;
    config
}

/// Opens session `index`, subscribes it and starts the tasks that count its pushes and log its
/// state changes.
async fn open_session(
    plan: &ResumePlan,
    index: u64,
    received: Arc<Mutex<Received>>,
) -> Result<Client> {
    let topic_index = u32::try_from(index % u64::from(plan.topics)).expect("below topics");
    let topic = format!("{}-{topic_index}", plan.topic_prefix);
    let mut attempt = 0;
    let (client, mut pushes) = loop {
        attempt += 1;
        let opened = async {
            let (client, pushes) = Client::connect(session_config(plan, index)).await?;
            if let Err(e) = client.subscribe([topic.clone()]).await {
                client.close().await;
                return Err(e);
            }
            Ok((client, pushes))
        };
        match opened.await {
            Ok(opened) => break opened,
            Err(e) if attempt >= SETUP_ATTEMPTS_MAX => {
                bail!("session {index}: {attempt} attempts at connect and subscribe: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(SETUP_RETRY_MS)).await,
        }
    };
    let topics = u64::from(plan.topics);
    let counted = received.clone();
    tokio::spawn(async move {
        while let Some(item) = pushes.recv().await {
            let Incoming::Push(push) = item else { continue };
            let id = std::str::from_utf8(&push.payload)
                .ok()
                .and_then(|text| text.parse::<u64>().ok());
            let mut received = counted.lock().expect("not poisoned");
            match id {
                Some(id) if id % topics == u64::from(topic_index) => {
                    let k = usize::try_from(id / topics).expect("fits usize");
                    if received.receipts.len() <= k {
                        received.receipts.resize(k + 1, 0);
                        received.first_seqs.resize(k + 1, 0);
                    }
                    if received.receipts[k] == 0 {
                        received.first_seqs[k] = push.seq;
                    } else if received.first_seqs[k] == push.seq {
                        received.duplicated_same_seq += 1;
                    }
                    received.receipts[k] = received.receipts[k].saturating_add(1);
                }
                _ => received.foreign += 1,
            }
        }
    });
    let mut states = client.watch_state();
    tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let state = summarize(&states.borrow_and_update());
            let mut received = received.lock().expect("not poisoned");
            if received.state_events.len() < STATE_EVENTS_MAX {
                received.state_events.push((Instant::now(), state));
            }
        }
    });
    Ok(client)
}

/// What a session went through, without its losses.
fn detail(
    client: &Client,
    received: &Received,
    index: u64,
    topic: usize,
    back_ms: Option<u64>,
    down_at: Instant,
) -> SessionDetail {
    let relative_ms = |at: Instant| -> i64 {
        match at.checked_duration_since(down_at) {
            Some(after) => after.as_millis() as i64,
            None => -(down_at.duration_since(at).as_millis() as i64),
        }
    };
    let stats = client.stats();
    SessionDetail {
        session: index,
        topic: topic as u32,
        back_ms,
        lost: 0,
        first_lost: 0,
        last_lost: 0,
        sessions_opened: stats.sessions_opened,
        goodbyes_received: stats.goodbyes_received,
        gaps_reported: stats.gaps_reported,
        pushes_dropped: stats.pushes_dropped,
        state: summarize(&client.state()),
        state_events: received
            .state_events
            .iter()
            .map(|(at, state)| (relative_ms(*at), state.clone()))
            .collect(),
    }
}

/// Counts session by session against the accepted ids of its topic.
fn count(
    plan: &ResumePlan,
    clients: &[Client],
    received: &[Arc<Mutex<Received>>],
    opened_at_down: &[u64],
    down_at: Instant,
    back_ms: &[Option<u64>],
    accepted: &[Vec<u64>],
) -> Result<WorkerSummary> {
    if accepted.len() != plan.topics as usize {
        bail!(
            "Count names {} topics, the plan {}",
            accepted.len(),
            plan.topics
        );
    }
    let topics = u64::from(plan.topics);
    let mut summary = WorkerSummary {
        worker: plan.worker,
        sessions: plan.sessions,
        ..WorkerSummary::default()
    };
    for (offset, (client, received)) in clients.iter().zip(received).enumerate() {
        let index = plan.first_session + offset as u64;
        let topic = (index % topics) as usize;
        let stats = client.stats();
        let received = received.lock().expect("not poisoned");
        let (mut lost, mut first_lost, mut last_lost) = (0u64, u64::MAX, 0u64);
        let mut matched = 0u64;
        for &id in &accepted[topic] {
            summary.expected += 1;
            let k = usize::try_from(id / topics).expect("fits usize");
            match received.receipts.get(k).copied().unwrap_or(0) {
                0 => {
                    lost += 1;
                    first_lost = first_lost.min(id);
                    last_lost = last_lost.max(id);
                    *summary.lost_by_payload.entry(id).or_default() += 1;
                }
                times => {
                    matched += 1;
                    summary.duplicated += u64::from(times - 1);
                    if times > 1 {
                        *summary.duplicated_by_payload.entry(id).or_default() +=
                            u64::from(times - 1);
                    }
                }
            }
        }
        let receipts_of_ids = received.receipts.iter().filter(|&&n| n > 0).count() as u64;
        summary.unexpected += received.foreign + (receipts_of_ids - matched);
        summary.duplicated_same_seq += received.duplicated_same_seq;
        summary.delivered += matched;
        summary.lost += lost;
        summary.gaps_reported += stats.gaps_reported;
        summary.pushes_dropped += stats.pushes_dropped;
        summary.pushes_awaiting_resume += stats.pushes_awaiting_resume;
        let back = stats.sessions_opened > opened_at_down[offset];
        if back {
            summary.sessions_back += 1;
        } else {
            *summary
                .not_back_states
                .entry(summarize(&client.state()))
                .or_default() += 1;
        }
        if lost > 0 && summary.lossy_sessions.len() < LOSSY_SESSIONS_REPORTED_MAX {
            let mut detail = detail(client, &received, index, topic, back_ms[offset], down_at);
            (detail.lost, detail.first_lost, detail.last_lost) = (lost, first_lost, last_lost);
            summary.lossy_sessions.push(detail);
        }
    }
    let mut by_back: Vec<(Option<u64>, usize)> = back_ms.iter().copied().zip(0..).collect();
    // Never back (None) sorts last, as the slowest.
    by_back.sort_unstable_by_key(|(ms, _)| ms.map_or(u64::MAX, |ms| ms));
    summary.back_ms_median = by_back.get(by_back.len() / 2).and_then(|(ms, _)| *ms);
    summary.back_ms_max = by_back.last().and_then(|(ms, _)| *ms);
    for &(ms, offset) in by_back.iter().rev().take(SLOWEST_SESSIONS_REPORTED_MAX) {
        let index = plan.first_session + offset as u64;
        let received = received[offset].lock().expect("not poisoned");
        let topic = (index % topics) as usize;
        summary.slowest_sessions.push(detail(
            &clients[offset],
            &received,
            index,
            topic,
            ms,
            down_at,
        ));
    }
    assert_eq!(summary.delivered + summary.lost, summary.expected);
    Ok(summary)
}

/// Reads the parent's next message; None when the parent closed our stdin.
fn receive(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Result<Option<ToWorker>> {
    match lines.next() {
        None => Ok(None),
        Some(line) => Ok(Some(
            serde_json::from_str(&line?).context("a line from the parent")?,
        )),
    }
}

/// The worker process: see the module documentation.
pub fn run(plan: &ResumePlan) -> Result<()> {
    assert!(plan.sessions <= crate::worker::SESSIONS_PER_WORKER_MAX);
    assert!(plan.topics > 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let received: Vec<Arc<Mutex<Received>>> = (0..plan.sessions)
        .map(|_| Arc::new(Mutex::new(Received::default())))
        .collect();
    let clients: Vec<Client> = runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(
            plan.connect_concurrency.max(1) as usize
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for offset in 0..plan.sessions {
            let (limit, plan) = (limit.clone(), plan.clone());
            let received = received[offset as usize].clone();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                let index = plan.first_session + u64::from(offset);
                Ok::<_, anyhow::Error>((offset, open_session(&plan, index, received).await?))
            });
        }
        let mut clients = Vec::with_capacity(plan.sessions as usize);
        while let Some(joined) = tasks.join_next().await {
            clients.push(joined.expect("session task")?);
        }
        clients.sort_by_key(|(offset, _)| *offset);
        Ok::<_, anyhow::Error>(clients.into_iter().map(|(_, c)| c).collect())
    })?;
    send(&FromWorker::Ready {
        sessions: plan.sessions,
    })?;

    let mut lines = std::io::stdin().lock().lines();
    let Some(ToWorker::ServerDown) = receive(&mut lines)? else {
        bail!("expected ServerDown from the parent");
    };
    let down_at = Instant::now();
    let opened_at_down: Vec<u64> = clients.iter().map(|c| c.stats().sessions_opened).collect();
    let clients = Arc::new(clients);
    let done = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (clients, opened_at_down, done) =
            (clients.clone(), opened_at_down.clone(), done.clone());
        std::thread::spawn(move || -> Result<Vec<Option<u64>>> {
            // When each session was first seen back, ms after ServerDown.
            let mut back_ms: Vec<Option<u64>> = vec![None; clients.len()];
            let mut left = clients.len();
            let mut told = false;
            while done.load(Ordering::Relaxed) == 0 {
                let now_ms = down_at.elapsed().as_millis() as u64;
                for (offset, client) in clients.iter().enumerate() {
                    if back_ms[offset].is_none()
                        && client.stats().sessions_opened > opened_at_down[offset]
                    {
                        back_ms[offset] = Some(now_ms);
                        left -= 1;
                    }
                }
                if left == 0 && !told {
                    send(&FromWorker::Back)?;
                    told = true;
                }
                if left == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(BACK_POLL_MS));
            }
            Ok(back_ms)
        })
    };
    let message = receive(&mut lines)?;
    done.store(1, Ordering::Relaxed);
    let back_ms = watcher.join().expect("back watcher")?;
    let Some(ToWorker::Count { accepted }) = message else {
        bail!("expected Count from the parent");
    };
    let summary = count(
        plan,
        &clients,
        &received,
        &opened_at_down,
        down_at,
        &back_ms,
        &accepted,
    )?;
    send(&FromWorker::Summary(Box::new(summary)))?;
    // The process exit closes every session's socket at once; the server sees them leave.
    Ok(())
}
