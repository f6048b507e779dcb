//! `storm --storm-mode goodbye --resume`: what a drain and restart costs the clients.
//!
//! Starts the server (`--server-bin serve --config --server-config`), opens `--sessions`
//! holdfast-client sessions (session i subscribes to topic `{topic}-{i mod K}`), and publishes
//! `--rate-per-s` pushes round-robin over the K topics through `POST /publish`, each with a
//! unique payload. A publish that is refused (503 while draining) or cannot connect (server
//! down) is retried with the same payload, as a backend would; only a 202 counts as published.
//! After `--hold-s` the server gets SIGTERM, is waited for and restarted on the same
//! addresses; the publisher goes on for `--duration-s`, then stops, and sessions get
//! `--drain-ms` to receive what is in flight.
//!
//! Every accepted payload is expected once by every session of its topic: lost = expected but
//! never received; duplicates = received more than once by one session. The client delivers
//! every push it gets (a seq that goes back is reported as `Gap::Reset`, not dropped: a new run
//! of a topic's numbers looks the same), so a duplicate is the server sending one push twice
//! (`duplicated_same_seq`) or a payload numbered twice (published twice after a lost answer,
//! or delivered before a restart and replayed after it).
//!
//! The sessions are held by worker processes ([`crate::resume_worker`]), each with at most
//! `--sessions-per-worker` (RLIMIT_NOFILE caps one process's descriptors) from its own
//! loopback source addresses; this process starts, signals and restarts the server, publishes,
//! and sums what the workers counted. "Back" is a session opened after the drained server
//! exited; the time until every session is back runs from the SIGTERM to the last worker's
//! report that all of its sessions are.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;
use crate::msg::StormMode;
use crate::resume_worker::{FromWorker, ResumePlan, ToWorker, WorkerSummary};
use crate::worker::SESSIONS_PER_WORKER_MAX;

/// How long the restarted server may take to answer on its admin listener.
const SERVER_START_TIMEOUT_MS: u64 = 10_000;
/// How long the drained server may take to exit after SIGTERM.
const SERVER_EXIT_TIMEOUT_MS: u64 = 30_000;
/// Sessions connecting at once in one worker while the run is set up.
const CONNECT_CONCURRENCY_PER_WORKER_MAX: u32 = 256;
/// Push stream capacity of each session: the counting task keeps up, a burst of replay fits.
const PUSH_BUFFER_MAX_ITEMS: usize = 65_536;
/// How long the workers may take to count and answer once the run is over.
const COUNT_TIMEOUT_MS: u64 = 120_000;
/// Pause before retrying a refused publish, in milliseconds (the server's Retry-After is 1 s;
/// a shorter retry shows the restart sooner and is still bounded).
const PUBLISH_RETRY_MS: u64 = 50;

/// The last sessions back listed in the report, with their state changes.
const SLOWEST_SESSIONS_REPORTED_MAX: usize = 5;
/// Lost payloads listed in the report (the first ones by id).
const LOST_PAYLOADS_REPORTED_MAX: usize = 10;

fn start_server(bin: &Path, config: &Path) -> Result<Child> {
    Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// Waits until the admin listener answers /healthz.
fn wait_admin(agent: &ureq::Agent, admin: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
    while Instant::now() < deadline {
        if agent.get(&format!("http://{admin}/healthz")).call().is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the server's admin listener {admin} did not answer within {SERVER_START_TIMEOUT_MS} ms")
}

/// What the publisher did.
#[derive(Default)]
struct Published {
    /// (topic index, payload id) of every accepted publish.
    accepted: Vec<(u32, u64)>,
    /// Attempts refused with 503 (draining).
    refused_503: u64,
    /// Attempts that failed otherwise (no connection, a timeout, another status).
    failed: u64,
    /// Payload ids accepted after a failed attempt: the failed one may have been accepted too
    /// (a reply lost to a timeout), which publishes the payload twice.
    accepted_after_failure: Vec<u64>,
}

/// Publishes payload ids 0, 1, 2, ... at `rate_per_s` over `topics` until `stop`; each id is
/// retried until accepted.
fn publisher(
    admin: String,
    topic_prefix: String,
    topics: u32,
    rate_per_s: u64,
    stop: Arc<AtomicBool>,
) -> Published {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(5_000))
        .build();
    let url = format!("http://{admin}/publish");
    let interval = Duration::from_nanos(1_000_000_000 / rate_per_s.max(1));
    let started = Instant::now();
    let mut published = Published::default();
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + interval * u32::try_from(id).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let topic = u32::try_from(id % u64::from(topics)).expect("below topics");
        let body =
            format!(r#"{{"target":"topic","topic":"{topic_prefix}-{topic}","payload":"{id}"}}"#);
        let mut failed_before = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                return published;
            }
            match agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_string(&body)
            {
                Ok(response) if response.status() == 202 => break,
                Err(ureq::Error::Status(503, _)) => published.refused_503 += 1,
                Ok(_) | Err(_) => {
                    published.failed += 1;
                    failed_before = true;
                }
            }
            std::thread::sleep(Duration::from_millis(PUBLISH_RETRY_MS));
        }
        if failed_before {
            published.accepted_after_failure.push(id);
        }
        published.accepted.push((topic, id));
        id += 1;
    }
    published
}

/// The worker processes and the server; whatever is still running when the run ends early is
/// killed.
struct Processes {
    server: Option<Child>,
    workers: Vec<Child>,
    stdins: Vec<ChildStdin>,
}

impl Processes {
    fn tell_all(&mut self, message: &ToWorker) -> Result<()> {
        let line = serde_json::to_string(message)? + "\n";
        for (worker, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
                .with_context(|| format!("worker {worker} is gone"))?;
        }
        Ok(())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().chain(self.server.as_mut()) {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A worker's message with the time this process read it; `None`: its stdout ended.
type Heard = (u32, Instant, Option<FromWorker>);

fn spawn_worker(plan: &ResumePlan, tx: mpsc::Sender<Heard>) -> Result<(Child, ChildStdin)> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut child = Command::new(exe)
        .arg("__resume-worker")
        .arg(serde_json::to_string(plan)?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start a resume worker process")?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let worker = plan.worker;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<FromWorker>(&line) {
                Ok(message) => {
                    if tx.send((worker, Instant::now(), Some(message))).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("resume worker {worker}: unreadable line: {e}"),
            }
        }
        let _ = tx.send((worker, Instant::now(), None));
    });
    Ok((child, stdin))
}

/// Waits until every worker sent what `wanted` picks (other messages are passed to `wanted`
/// and otherwise ignored), or `timeout` passes (then None). A worker whose stdout ends fails
/// the run.
fn hear_all<T>(
    rx: &mpsc::Receiver<Heard>,
    workers: u32,
    timeout: Duration,
    what: &str,
    mut wanted: impl FnMut(u32, Instant, FromWorker) -> Option<T>,
) -> Result<Option<Vec<(Instant, T)>>> {
    let deadline = Instant::now() + timeout;
    let mut heard: Vec<Option<(Instant, T)>> = (0..workers).map(|_| None).collect();
    while heard.iter().any(Option::is_none) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        match rx.recv_timeout(left) {
            Ok((worker, at, Some(message))) => {
                if let Some(value) = wanted(worker, at, message) {
                    heard[worker as usize] = Some((at, value));
                }
            }
            Ok((worker, _, None)) => {
                bail!("resume worker {worker} exited while waiting for {what}")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every resume worker is gone"),
        }
    }
    Ok(Some(
        heard.into_iter().map(|h| h.expect("all heard")).collect(),
    ))
}

/// The workers' plans: `sessions` split as evenly as possible over at least `args.workers`
/// processes of at most `--sessions-per-worker` each.
fn plans(args: &RunArgs, topics: u32) -> Vec<ResumePlan> {
    let per_worker_max = args.sessions_per_worker.clamp(1, SESSIONS_PER_WORKER_MAX);
    let workers = args
        .workers
        .max(args.sessions.div_ceil(per_worker_max))
        .clamp(1, args.sessions.max(1));
    let mut first = 0u64;
    (0..workers)
        .map(|worker| {
            let sessions = args.sessions / workers + u32::from(worker < args.sessions % workers);
            let plan = ResumePlan {
                worker,
                target: args.target,
                first_session: first,
                sessions,
                topics,
                topic_prefix: args.topic.clone(),
                sessions_per_source_addr: args.sessions_per_source_addr,
                connect_concurrency: args
                    .connect_concurrency
                    .min(CONNECT_CONCURRENCY_PER_WORKER_MAX),
                reconnect_base_delay_ms: args.retry_backoff_ms.max(1),
                reconnect_max_delay_ms: args.reconnect_max_delay_ms,
                push_buffer_max_items: PUSH_BUFFER_MAX_ITEMS,
            };
            first += u64::from(sessions);
            plan
        })
        .collect()
}

/// Sessions of each topic (session i subscribes to topic i mod topics).
fn sessions_by_topic(sessions: u32, topics: u32) -> Vec<u64> {
    (0..topics)
        .map(|t| u64::from(sessions / topics + u32::from(t < sessions % topics)))
        .collect()
}

pub fn run(args: &RunArgs) -> Result<i32> {
    if args.storm_mode != StormMode::Goodbye {
        bail!("--resume needs --storm-mode goodbye (a drain and restart)");
    }
    let (Some(bin), Some(config)) = (&args.server_bin, &args.server_config) else {
        bail!("--resume needs --server-bin and --server-config");
    };
    let Some(admin) = args.admin else {
        bail!("--resume needs --admin (the server's admin listener, for POST /publish)");
    };
    if !args.target.ip().is_loopback() || !admin.ip().is_loopback() {
        bail!("load tests only to loopback");
    }
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let back_timeout = Duration::from_secs(args.back_timeout_s);
    // A session whose attempts failed while the server was down waits up to the backoff's
    // ceiling before its next one: the wait for every session must outlast it.
    if back_timeout.as_millis() < 2 * u128::from(args.reconnect_max_delay_ms) {
        bail!(
            "--back-timeout-s {} must be at least twice --reconnect-max-delay-ms {}",
            args.back_timeout_s,
            args.reconnect_max_delay_ms
        );
    }
    let topics = args.resume_topics.max(1);
    let admin = admin.to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(1_000))
        .build();
    let plans = plans(args, topics);
    let workers = plans.len() as u32;
    let mut processes = Processes {
        server: Some(start_server(bin, config)?),
        workers: Vec::new(),
        stdins: Vec::new(),
    };
    wait_admin(&agent, &admin)?;

    let (tx, rx) = mpsc::channel();
    for plan in &plans {
        let (child, stdin) = spawn_worker(plan, tx.clone())?;
        processes.workers.push(child);
        processes.stdins.push(stdin);
    }
    drop(tx);
    let setup = Instant::now();
    let ready = hear_all(
        &rx,
        workers,
        Duration::from_secs(args.setup_timeout_s),
        "Ready",
        |_, _, m| match m {
            FromWorker::Ready { sessions } => Some(sessions),
            _ => None,
        },
    )?;
    let Some(ready) = ready else {
        bail!(
            "not every session subscribed within --setup-timeout-s {}",
            args.setup_timeout_s
        );
    };
    let subscribed: u64 = ready.iter().map(|(_, n)| u64::from(*n)).sum();
    assert_eq!(subscribed, u64::from(args.sessions));
    let setup_ms = setup.elapsed().as_millis();
    eprintln!(
        "{subscribed} sessions subscribed over {topics} topics in {workers} worker processes \
         ({setup_ms} ms)"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (admin, prefix, stop) = (admin.clone(), args.topic.clone(), stop.clone());
        let rate = args.rate_per_s;
        std::thread::spawn(move || publisher(admin, prefix, topics, rate, stop))
    };
    std::thread::sleep(Duration::from_secs(args.hold_s));
    let server = processes.server.as_mut().expect("started");
    // SAFETY: kill(2) on the pid of the child this process started and has not reaped.
    let signalled = unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    if signalled != 0 {
        bail!("SIGTERM to the server failed");
    }
    let drained_at = Instant::now();
    let exit_deadline = drained_at + Duration::from_millis(SERVER_EXIT_TIMEOUT_MS);
    let status = loop {
        if let Some(status) = server.try_wait()? {
            break status;
        }
        if Instant::now() > exit_deadline {
            bail!("the server did not exit within {SERVER_EXIT_TIMEOUT_MS} ms of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let drain_ms = drained_at.elapsed().as_millis();
    processes.tell_all(&ToWorker::ServerDown)?;
    processes.server = Some(start_server(bin, config)?);
    wait_admin(&agent, &admin)?;
    let restarted_ms = drained_at.elapsed().as_millis();
    let back = hear_all(&rx, workers, back_timeout, "Back", |_, _, m| match m {
        FromWorker::Back => Some(()),
        _ => None,
    })?;
    let back_ms = back.map(|heard| {
        let last = heard.iter().map(|(at, ())| *at).max().expect("a worker");
        last.duration_since(drained_at).as_millis()
    });
    eprintln!("every session back: {back_ms:?} ms after SIGTERM");
    std::thread::sleep(Duration::from_secs(args.duration_s));
    stop.store(true, Ordering::Relaxed);
    let Published {
        accepted,
        refused_503,
        failed,
        accepted_after_failure,
    } = publishing.join().expect("publisher thread");
    std::thread::sleep(Duration::from_millis(args.drain_ms));

    let mut by_topic: Vec<Vec<u64>> = vec![Vec::new(); topics as usize];
    for (topic, id) in &accepted {
        by_topic[*topic as usize].push(*id);
    }
    let expected_by_topics: u64 = sessions_by_topic(args.sessions, topics)
        .iter()
        .zip(&by_topic)
        .map(|(sessions, ids)| sessions * ids.len() as u64)
        .sum();
    processes.tell_all(&ToWorker::Count { accepted: by_topic })?;
    // A worker whose sessions were all back only after the wait ran out says so late.
    let mut back_late_ms: BTreeMap<u32, u128> = BTreeMap::new();
    let summaries = hear_all(
        &rx,
        workers,
        Duration::from_millis(COUNT_TIMEOUT_MS),
        "Summary",
        |worker, at, m| match m {
            FromWorker::Summary(summary) => Some(*summary),
            FromWorker::Back => {
                back_late_ms.insert(worker, at.duration_since(drained_at).as_millis());
                None
            }
            FromWorker::Ready { .. } => None,
        },
    );
    let summaries: Vec<WorkerSummary> = match summaries? {
        Some(heard) => heard.into_iter().map(|(_, s)| s).collect(),
        None => bail!("the workers did not count within {COUNT_TIMEOUT_MS} ms"),
    };
    let mut total = WorkerSummary::default();
    let mut lost_by_payload: BTreeMap<u64, u64> = BTreeMap::new();
    let mut duplicated_by_payload: BTreeMap<u64, u64> = BTreeMap::new();
    for s in &summaries {
        total.sessions += s.sessions;
        total.expected += s.expected;
        total.delivered += s.delivered;
        total.duplicated += s.duplicated;
        total.duplicated_same_seq += s.duplicated_same_seq;
        total.lost += s.lost;
        total.unexpected += s.unexpected;
        total.gaps_reported += s.gaps_reported;
        total.pushes_dropped += s.pushes_dropped;
        total.pushes_awaiting_resume += s.pushes_awaiting_resume;
        total.sessions_back += s.sessions_back;
        for (id, n) in &s.lost_by_payload {
            *lost_by_payload.entry(*id).or_default() += n;
        }
        for (id, n) in &s.duplicated_by_payload {
            *duplicated_by_payload.entry(*id).or_default() += n;
        }
        for (state, n) in &s.not_back_states {
            *total.not_back_states.entry(state.clone()).or_default() += n;
        }
        total
            .lossy_sessions
            .extend(s.lossy_sessions.iter().cloned());
        total
            .slowest_sessions
            .extend(s.slowest_sessions.iter().cloned());
    }
    total
        .slowest_sessions
        .sort_by_key(|d| std::cmp::Reverse(d.back_ms.map_or(u64::MAX, |ms| ms)));
    total
        .slowest_sessions
        .truncate(SLOWEST_SESSIONS_REPORTED_MAX);
    // The workers' expectations are the accepted payloads times the sessions of their topic.
    if total.expected != expected_by_topics {
        bail!(
            "the workers expected {} deliveries, the accepted payloads make {expected_by_topics}",
            total.expected
        );
    }
    let first_lost: Vec<String> = lost_by_payload
        .iter()
        .take(LOST_PAYLOADS_REPORTED_MAX)
        .map(|(id, n)| format!("#{id}x{n}"))
        .collect();
    let first_duplicated: Vec<String> = duplicated_by_payload
        .iter()
        .take(LOST_PAYLOADS_REPORTED_MAX)
        .map(|(id, n)| format!("#{id}x{n}"))
        .collect();
    let per_worker: Vec<_> = summaries
        .iter()
        .map(|s| {
            serde_json::json!({
                "worker": s.worker,
                "sessions": s.sessions,
                "expected_deliveries": s.expected,
                "delivered": s.delivered,
                "duplicated": s.duplicated,
                "lost": s.lost,
                "sessions_resumed": s.sessions_back,
                "back_ms_after_server_down_median": s.back_ms_median,
                "back_ms_after_server_down_max": s.back_ms_max,
            })
        })
        .collect();
    let report = serde_json::json!({
        "sessions": args.sessions,
        "workers": workers,
        "topics": topics,
        "rate_per_s": args.rate_per_s,
        "setup_ms": setup_ms,
        "published_accepted": accepted.len(),
        "publish_refused_503": refused_503,
        "publish_failed_attempts": failed,
        "expected_deliveries": total.expected,
        "delivered": total.delivered,
        "duplicated": total.duplicated,
        "duplicated_same_seq": total.duplicated_same_seq,
        "lost": total.lost,
        "unexpected": total.unexpected,
        "gaps_reported": total.gaps_reported,
        "pushes_dropped": total.pushes_dropped,
        "pushes_awaiting_resume": total.pushes_awaiting_resume,
        "first_server_exit": format!("{status}"),
        "drain_ms": drain_ms,
        "restarted_ms": restarted_ms,
        "all_sessions_back_ms": back_ms,
        "workers_back_late_ms": back_late_ms,
        "sessions_resumed": total.sessions_back,
        "first_lost_payloads": first_lost,
        "first_duplicated_payloads": first_duplicated,
        "payloads_accepted_after_a_failed_attempt": accepted_after_failure,
        "not_back_states": total.not_back_states,
        "lossy_sessions": total.lossy_sessions,
        "slowest_sessions": total.slowest_sessions,
        "per_worker": per_worker,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let server = processes.server.as_mut().expect("restarted");
    // SAFETY: kill(2) on the pid of the child this process started and has not reaped.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    for worker in &mut processes.workers {
        let _ = worker.wait();
    }
    let clean = total.lost == 0 && total.unexpected == 0 && back_ms.is_some();
    Ok(if clean { 0 } else { 3 })
}
