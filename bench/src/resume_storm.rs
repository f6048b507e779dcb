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
//! never received; duplicates = received more than once (the client drops duplicates by
//! sequence, so this counts what reached the stream twice). Sessions are held in one process,
//! so `--sessions` is bounded by its RLIMIT_NOFILE.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use holdfast_client::{Client, ClientConfig, Incoming};

use crate::cli::RunArgs;
use crate::msg::StormMode;

/// How long the restarted server may take to answer on its admin listener.
const SERVER_START_TIMEOUT_MS: u64 = 10_000;
/// How long the drained server may take to exit after SIGTERM.
const SERVER_EXIT_TIMEOUT_MS: u64 = 30_000;
/// Sessions connecting at once while the run is set up.
const CONNECT_CONCURRENCY_MAX: usize = 256;
/// Pause before retrying a refused publish, in milliseconds (the server's Retry-After is 1 s;
/// a shorter retry shows the restart sooner and is still bounded).
const PUBLISH_RETRY_MS: u64 = 50;

/// Characters of a client's state kept when summarising why sessions are not back.
const STATE_SUMMARY_CHARS: usize = 120;

/// What one session received: payload id -> times seen.
type Seen = HashMap<u64, u32>;

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

/// Publishes payload ids 0, 1, 2, ... at `rate_per_s` over `topics` until `stop`; each id is
/// retried until accepted. Returns (topic index, payload id) of every accepted publish, and
/// how many attempts were refused with 503 or failed to connect.
fn publisher(
    admin: String,
    topic_prefix: String,
    topics: u32,
    rate_per_s: u64,
    stop: Arc<AtomicBool>,
) -> (Vec<(u32, u64)>, u64, u64) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(5_000))
        .build();
    let url = format!("http://{admin}/publish");
    let interval = Duration::from_nanos(1_000_000_000 / rate_per_s.max(1));
    let started = Instant::now();
    let mut accepted = Vec::new();
    let (mut refused_503, mut failed) = (0u64, 0u64);
    let mut id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + interval * u32::try_from(id).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let topic = u32::try_from(id % u64::from(topics)).expect("below topics");
        let body =
            format!(r#"{{"target":"topic","topic":"{topic_prefix}-{topic}","payload":"{id}"}}"#);
        loop {
            if stop.load(Ordering::Relaxed) {
                return (accepted, refused_503, failed);
            }
            match agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_string(&body)
            {
                Ok(response) if response.status() == 202 => break,
                Err(ureq::Error::Status(503, _)) => refused_503 += 1,
                Ok(_) | Err(_) => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(PUBLISH_RETRY_MS));
        }
        accepted.push((topic, id));
        id += 1;
    }
    (accepted, refused_503, failed)
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
    let topics = args.resume_topics.max(1);
    let admin = admin.to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(1_000))
        .build();
    let mut server = start_server(bin, config)?;
    wait_admin(&agent, &admin)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let seen: Vec<Arc<Mutex<Seen>>> = (0..args.sessions)
        .map(|_| Arc::new(Mutex::new(Seen::new())))
        .collect();
    let gaps = Arc::new(AtomicU64::new(0));
    let clients: Vec<Client> = runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY_MAX));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.sessions {
            let limit = limit.clone();
            let seen = seen[i as usize].clone();
            let gaps = gaps.clone();
            let mut config = ClientConfig::tcp(args.target.to_string());
            config.reconnect_base_delay_ms = args.retry_backoff_ms.max(1);
            config.push_buffer_max_items = 65_536;
            let topic = format!("{}-{}", args.topic, i % topics);
            tasks.spawn(async move {
                let permit = limit.acquire_owned().await.expect("semaphore open");
                let (client, mut pushes) = Client::connect(config).await?;
                client.subscribe([topic]).await?;
                drop(permit);
                tokio::spawn(async move {
                    while let Some(item) = pushes.recv().await {
                        match item {
                            Incoming::Push(push) => {
                                let id = std::str::from_utf8(&push.payload)
                                    .ok()
                                    .and_then(|text| text.parse::<u64>().ok());
                                if let Some(id) = id {
                                    *seen.lock().expect("not poisoned").entry(id).or_default() += 1;
                                }
                            }
                            Incoming::Gap(_) => {
                                gaps.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                });
                Ok::<_, holdfast_client::Error>((i, client))
            });
        }
        let mut clients = Vec::with_capacity(args.sessions as usize);
        while let Some(joined) = tasks.join_next().await {
            clients.push(joined.expect("session task")?);
        }
        clients.sort_by_key(|(i, _)| *i);
        Ok::<_, holdfast_client::Error>(clients.into_iter().map(|(_, c)| c).collect())
    })?;
    eprintln!("{} sessions subscribed over {topics} topics", clients.len());

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (admin, prefix, stop) = (admin.clone(), args.topic.clone(), stop.clone());
        let rate = args.rate_per_s;
        std::thread::spawn(move || publisher(admin, prefix, topics, rate, stop))
    };
    std::thread::sleep(Duration::from_secs(args.hold_s));
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
            server.kill()?;
            bail!("the server did not exit within {SERVER_EXIT_TIMEOUT_MS} ms of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let drain_ms = drained_at.elapsed().as_millis();
    server = start_server(bin, config)?;
    wait_admin(&agent, &admin)?;
    let restarted_ms = drained_at.elapsed().as_millis();
    // Every session back: its second session opened.
    let back_ms = loop {
        if clients.iter().all(|c| c.stats().sessions_opened >= 2) {
            break Some(drained_at.elapsed().as_millis());
        }
        if drained_at.elapsed() > Duration::from_secs(args.duration_s.max(1) + 60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_secs(args.duration_s));
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused_503, failed) = publishing.join().expect("publisher thread");
    std::thread::sleep(Duration::from_millis(args.drain_ms));

    let mut by_topic: Vec<Vec<u64>> = vec![Vec::new(); topics as usize];
    for (topic, id) in &accepted {
        by_topic[*topic as usize].push(*id);
    }
    let (mut expected, mut delivered, mut duplicated, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut lost_ids: HashMap<u64, u64> = HashMap::new();
    for (i, seen) in seen.iter().enumerate() {
        let seen = seen.lock().expect("not poisoned");
        for id in &by_topic[i % topics as usize] {
            expected += 1;
            match seen.get(id) {
                Some(times) => {
                    delivered += 1;
                    duplicated += u64::from(times - 1);
                }
                None => {
                    lost += 1;
                    *lost_ids.entry(*id).or_default() += 1;
                }
            }
        }
    }
    let stats: Vec<_> = clients.iter().map(Client::stats).collect();
    let resumed = stats.iter().filter(|s| s.sessions_opened >= 2).count();
    // Why sessions that are not back are not: their states, by kind and cause.
    let mut not_back: HashMap<String, u64> = HashMap::new();
    for (client, stats) in clients.iter().zip(&stats) {
        if stats.sessions_opened < 2 {
            let state = format!("{:?}", client.state());
            let key: String = state.chars().take(STATE_SUMMARY_CHARS).collect();
            *not_back.entry(key).or_default() += 1;
        }
    }
    let mut lost_sorted: Vec<(u64, u64)> = lost_ids.into_iter().collect();
    lost_sorted.sort_unstable();
    let first_lost: Vec<String> = lost_sorted
        .iter()
        .take(10)
        .map(|(id, n)| format!("#{id}x{n}"))
        .collect();
    let report = serde_json::json!({
        "sessions": args.sessions,
        "topics": topics,
        "rate_per_s": args.rate_per_s,
        "published_accepted": accepted.len(),
        "publish_refused_503": refused_503,
        "publish_failed_attempts": failed,
        "expected_deliveries": expected,
        "delivered": delivered,
        "duplicated": duplicated,
        "lost": lost,
        "gaps_reported": gaps.load(Ordering::Relaxed),
        "first_server_exit": format!("{status}"),
        "drain_ms": drain_ms,
        "restarted_ms": restarted_ms,
        "all_sessions_back_ms": back_ms,
        "sessions_resumed": resumed,
        "first_lost_payloads": first_lost,
        "not_back_states": not_back,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    runtime.block_on(async {
        for client in &clients {
            client.close().await;
        }
    });
    // SAFETY: kill(2) on the pid of the child this process started and has not reaped.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    Ok(if lost == 0 && back_ms.is_some() { 0 } else { 3 })
}
