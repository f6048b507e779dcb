//! The parent process of a run: splits sessions over worker processes, starts them (re-exec of
//! this binary), drives setup, the warm-up and the measured window with one clock, merges the
//! workers' per-second and final histograms, samples the server's CPU and memory, and builds the
//! report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::RunArgs;
use crate::clock::{mono_ns, sleep_until_ns, NS_PER_MS, NS_PER_S};
use crate::events;
use crate::hist::{self, Hist};
use crate::msg::{AuthPlan, Command, Counters, Final, Phases, Report, WorkerPlan, Workload};
use crate::procfs;
use crate::push;
use crate::report::{RunReport, ServerCpu};
use crate::sockets;
use crate::worker::SESSIONS_PER_WORKER_MAX;

/// Lead time between the Go command and the first traffic, so every worker has it in time.
const GO_LEAD_MS: u64 = 200;
/// After the window and drain, a worker that has not reported Final by then is stopped.
const FINAL_GRACE_MS: u64 = 10_000;
/// Settle time after setup before the memory snapshot (connect).
const MEMORY_SETTLE_MS: u64 = 1_000;

struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    sessions: u32,
}

/// Per-second aggregation across workers.
struct TickAgg {
    reported: u32,
    counters: Counters,
    hist: Hist,
}

/// Splits `sessions` over worker plans (each at most `per_worker` sessions).
pub fn plan_workers(workload: Workload, args: &RunArgs) -> Result<Vec<WorkerPlan>> {
    sockets::check_loopback(args.target)?;
    anyhow::ensure!(args.sessions > 0, "--sessions must be at least 1");
    let per_worker = args.sessions_per_worker.clamp(1, SESSIONS_PER_WORKER_MAX);
    let workers = args
        .workers
        .max(args.sessions.div_ceil(per_worker))
        .min(args.sessions);
    let auth = args.secret.as_ref().map(|secret| AuthPlan {
        secret: secret.as_bytes().to_vec(),
        client_id_prefix: args.client_id_prefix.clone(),
        token_ttl_s: args.token_ttl_s,
    });
    let mut plans = Vec::new();
    let mut first = 0u64;
    for w in 0..workers {
        let sessions = args.sessions / workers + u32::from(w < args.sessions % workers);
        let share = |total: u64| (total * u64::from(sessions)).div_ceil(u64::from(args.sessions));
        plans.push(WorkerPlan {
            worker_index: w,
            workload,
            target: args.target,
            sessions,
            first_session_index: first,
            sessions_per_source_addr: args.sessions_per_source_addr,
            raw: args.raw,
            auth: auth.clone(),
            connect_rate_per_s: share(args.connect_rate_per_s),
            connect_concurrency_max: args.connect_concurrency.max(1),
            handshake_timeout_ms: args.handshake_timeout_ms,
            inflight_per_session: if workload == Workload::Events {
                args.inflight_events
            } else {
                args.inflight.max(1)
            },
            payload_bytes: args.payload_bytes,
            rate_per_s: share(args.rate_per_s).max(1),
            method: args.method.clone(),
            max_frame_bytes: args.max_frame_bytes,
            ping_interval_ms: args.ping_interval_ms,
            drain_ms: args.drain_ms,
            storm_mode: args.storm_mode,
            retry_backoff_ms: args.retry_backoff_ms,
            push_topic: args.topic.clone(),
            push_stream: if args.broadcast_burst.is_some() {
                crate::push::BROADCAST_TOPIC.to_owned()
            } else {
                args.topic.clone()
            },
            event_topic: args.event_topic.clone(),
            event_ack: args.ack,
            transport: crate::transport::TransportPlan {
                kind: args.transport,
                tls_ca: args.tls_ca.clone(),
                tls_server_name: args.tls_server_name.clone(),
                ws_path: args.ws_path.clone(),
            },
        });
        first += u64::from(sessions);
    }
    Ok(plans)
}

fn spawn_worker(plan: &WorkerPlan, tx: mpsc::Sender<(u32, Option<Report>)>) -> Result<WorkerProc> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut child = Process::new(exe)
        .arg("__worker")
        .arg(serde_json::to_string(plan)?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start worker process")?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let worker = plan.worker_index;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Report>(&line) {
                Ok(report) => {
                    if tx.send((worker, Some(report))).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker {worker}: unreadable report: {e}"),
            }
        }
        let _ = tx.send((worker, None));
    });
    Ok(WorkerProc {
        child,
        stdin,
        sessions: plan.sessions,
    })
}

fn send_command(worker: &mut WorkerProc, command: &Command) {
    let mut line = serde_json::to_vec(command).expect("commands serialize");
    line.push(b'\n');
    let _ = worker
        .stdin
        .write_all(&line)
        .and_then(|_| worker.stdin.flush());
}

/// Runs one workload end to end and returns its report (files are written by the caller).
pub fn run(workload: Workload, args: &RunArgs) -> Result<RunReport> {
    let plans = plan_workers(workload, args)?;
    let publish_plan = (workload == Workload::Push).then(|| push::PublishPlan {
        admin: args.admin.unwrap_or(crate::cli::PUSH_ADMIN_DEFAULT),
        topic: args.topic.clone(),
        broadcast_burst: args.broadcast_burst,
        rate_per_s: args.rate_per_s.max(1),
        payload_bytes: args.payload_bytes as usize,
        secret: args.publish_secret.clone(),
        timeout_ms: args.publish_timeout_ms,
    });
    if let Some(plan) = &publish_plan {
        anyhow::ensure!(
            !args.raw,
            "push needs sessions (Hello, Subscribe): drop --raw"
        );
        push::preflight(plan)?;
    }
    let events_before = if workload == Workload::Events {
        anyhow::ensure!(!args.raw, "events needs sessions (Hello): drop --raw");
        events::check_args(args.inflight_events, &args.event_topic)?;
        args.admin.map(events::preflight).transpose()?
    } else {
        None
    };
    let memory_before = match (workload, args.server_pid) {
        (Workload::Connect, Some(pid)) => {
            Some((procfs::memory_snapshot(pid)?, procfs::cpu_us(pid)?))
        }
        _ => None,
    };
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for plan in &plans {
        workers.push(spawn_worker(plan, tx.clone())?);
    }
    drop(tx);
    let mut run = ParentRun::new(workload, args, workers.len());
    let setup_result = run.setup(&rx, &mut workers);
    if let Err(e) = setup_result {
        for w in &mut workers {
            let _ = w.child.kill();
        }
        return Err(e);
    }
    let memory = match (memory_before, args.server_pid) {
        (Some((before, cpu_before_us)), Some(pid)) => {
            let setup_cpu_us = procfs::cpu_us(pid)?.saturating_sub(cpu_before_us);
            sleep_until_ns(mono_ns() + MEMORY_SETTLE_MS * NS_PER_MS);
            let after = procfs::memory_snapshot(pid)?;
            let open = run.setup_counters().sessions_open;
            let mut memory = procfs::memory_per_session(&before, &after, open, open);
            memory.setup_server_cpu_us = Some(setup_cpu_us);
            memory.setups_per_server_cpu_s =
                (setup_cpu_us > 0).then(|| open as f64 * 1e6 / setup_cpu_us as f64);
            Some(memory)
        }
        _ => None,
    };
    let phases = phases_for(workload, args);
    if publish_plan.is_some() && run.setup_counters().push_subscribed == 0 {
        for w in &mut workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        bail!("push: no session is subscribed (Subscribe answered by Ack): nothing to measure");
    }
    for w in &mut workers {
        send_command(w, &Command::Go(phases));
    }
    let burst_cpu_sampler = match (&publish_plan, args.server_pid) {
        (Some(plan), Some(pid)) if plan.broadcast_burst.is_some() => {
            Some(push::spawn_cpu_sampler(pid, phases))
        }
        _ => None,
    };
    let publisher = publish_plan.map(|plan| push::spawn_publisher(plan, phases));
    let sampler = (workload == Workload::Events).then(|| {
        let plan = events::SamplerPlan {
            admin: args.admin,
            server_pid: args.server_pid,
            drain_ms: args.drain_ms,
        };
        events::spawn_sampler(plan, phases)
    });
    let measured = run.measure(&rx, &mut workers, phases);
    run.publisher = match publisher {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the publisher thread panicked"))?,
        ),
        None => None,
    };
    if let Some(handle) = burst_cpu_sampler {
        run.burst_cpu_samples = Some(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("the burst CPU sampler thread panicked"))?,
        );
    }
    if let Some(handle) = sampler {
        let samples = handle
            .join()
            .map_err(|_| anyhow::anyhow!("the events sampler thread panicked"))?;
        run.events = Some((events_before, samples));
    }
    measured?;
    for w in &mut workers {
        let _ = w.child.wait();
    }
    let sessions_planned = workers.iter().map(|w| u64::from(w.sessions)).sum();
    run.into_report(sessions_planned, phases, memory)
}

fn phases_for(workload: Workload, args: &RunArgs) -> Phases {
    let warmup_start_ns = mono_ns() + GO_LEAD_MS * NS_PER_MS;
    match workload {
        Workload::Storm => {
            let drop_at_ns = warmup_start_ns + args.hold_s * NS_PER_S;
            Phases {
                warmup_start_ns,
                measure_start_ns: warmup_start_ns,
                measure_end_ns: drop_at_ns + args.duration_s * NS_PER_S,
                drop_at_ns: (args.storm_mode != crate::msg::StormMode::Goodbye)
                    .then_some(drop_at_ns),
            }
        }
        Workload::Connect => Phases {
            warmup_start_ns,
            measure_start_ns: warmup_start_ns,
            measure_end_ns: warmup_start_ns + args.duration_s * NS_PER_S,
            drop_at_ns: None,
        },
        _ => {
            let measure_start_ns = warmup_start_ns + args.warmup_s * NS_PER_S;
            Phases {
                warmup_start_ns,
                measure_start_ns,
                measure_end_ns: measure_start_ns + args.duration_s * NS_PER_S,
                drop_at_ns: None,
            }
        }
    }
}

struct ParentRun<'a> {
    workload: Workload,
    args: &'a RunArgs,
    workers: usize,
    latest: Vec<Counters>,
    ready: Vec<bool>,
    exited: Vec<bool>,
    finals: Vec<Option<Final>>,
    ticks: BTreeMap<u64, TickAgg>,
    measured_ticks: Vec<(u64, Hist)>,
    previous_tick_counters: Counters,
    server_cpu_us: (Option<u64>, Option<u64>),
    setup_ms: u64,
    setup_timed_out: bool,
    publisher: Option<push::PublisherResult>,
    /// push --broadcast-burst with --server-pid: the server's CPU sampled around the burst.
    burst_cpu_samples: Option<push::CpuSamples>,
    /// events: the server's counters before the run, and the sampler's samples.
    events: Option<(Option<events::ServerEvents>, events::Samples)>,
}

impl<'a> ParentRun<'a> {
    fn new(workload: Workload, args: &'a RunArgs, workers: usize) -> ParentRun<'a> {
        ParentRun {
            workload,
            args,
            workers,
            latest: vec![Counters::default(); workers],
            ready: vec![false; workers],
            exited: vec![false; workers],
            finals: (0..workers).map(|_| None).collect(),
            ticks: BTreeMap::new(),
            measured_ticks: Vec::new(),
            previous_tick_counters: Counters::default(),
            server_cpu_us: (None, None),
            setup_ms: 0,
            setup_timed_out: false,
            publisher: None,
            burst_cpu_samples: None,
            events: None,
        }
    }

    fn setup_counters(&self) -> Counters {
        let mut sum = Counters::default();
        for c in &self.latest {
            sum.add(c);
        }
        sum
    }

    /// Waits until every worker has opened (or failed) its sessions, with a progress bar.
    fn setup(
        &mut self,
        rx: &mpsc::Receiver<(u32, Option<Report>)>,
        workers: &mut [WorkerProc],
    ) -> Result<()> {
        let started = mono_ns();
        let deadline = started + self.args.setup_timeout_s * NS_PER_S;
        let total = u64::from(self.args.sessions);
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "connecting {bar:40} {pos}/{len} sessions {per_sec} {msg}",
            )
            .expect("static template"),
        );
        while !self.ready.iter().all(|r| *r) {
            let now = mono_ns();
            if now >= deadline {
                self.setup_timed_out = true;
                eprintln!(
                    "setup timed out after {} s: going on with the sessions that are open",
                    self.args.setup_timeout_s
                );
                break;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((w, Some(Report::Progress { counters, .. }))) => {
                    self.latest[w as usize] = counters
                }
                Ok((w, Some(Report::Ready { counters, .. }))) => {
                    self.latest[w as usize] = counters;
                    self.ready[w as usize] = true;
                }
                Ok((w, Some(other))) => bail!("worker {w} sent {other:?} during setup"),
                Ok((w, None)) => {
                    let status = workers[w as usize].child.wait();
                    bail!("worker {w} exited during setup ({status:?}): see its message above");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("all workers exited during setup")
                }
            }
            let sum = self.setup_counters();
            let failed: u64 = sum.connect_failed.values().sum();
            bar.set_position(sum.sessions_opened + failed);
            if failed > 0 {
                bar.set_message(format!("({failed} failed)"));
            }
        }
        bar.finish_and_clear();
        self.setup_ms = (mono_ns() - started) / NS_PER_MS;
        let sum = self.setup_counters();
        eprintln!(
            "setup: {} of {} sessions open in {} ms, {} failed {:?}",
            sum.sessions_open,
            total,
            self.setup_ms,
            sum.connect_failed.values().sum::<u64>(),
            sum.connect_failed
        );
        Ok(())
    }

    /// Runs the window: live lines per second, server CPU at the window's edges, Final reports.
    fn measure(
        &mut self,
        rx: &mpsc::Receiver<(u32, Option<Report>)>,
        workers: &mut [WorkerProc],
        phases: Phases,
    ) -> Result<()> {
        let hard_end = phases.measure_end_ns + (self.args.drain_ms + FINAL_GRACE_MS) * NS_PER_MS;
        let mut stop_sent = false;
        loop {
            let done = (0..self.workers).all(|w| self.finals[w].is_some() || self.exited[w]);
            if done {
                break;
            }
            let now = mono_ns();
            self.sample_server_cpu(now, phases);
            if now >= hard_end {
                if stop_sent {
                    eprintln!("workers did not finish: killing them");
                    for w in workers.iter_mut() {
                        let _ = w.child.kill();
                    }
                    break;
                }
                for w in workers.iter_mut() {
                    send_command(w, &Command::Stop);
                }
                stop_sent = true;
            }
            let mut wait_ns = 100 * NS_PER_MS;
            for edge in [phases.measure_start_ns, phases.measure_end_ns] {
                if edge > now {
                    wait_ns = wait_ns.min(edge - now);
                }
            }
            match rx.recv_timeout(Duration::from_nanos(wait_ns.max(1))) {
                Ok((w, Some(report))) => self.on_report(w as usize, report, phases)?,
                Ok((w, None)) => self.exited[w as usize] = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.sample_server_cpu(mono_ns(), phases);
        let missing: Vec<usize> = (0..self.workers)
            .filter(|w| self.finals[*w].is_none())
            .collect();
        if !missing.is_empty() {
            bail!("workers {missing:?} ended without a final report");
        }
        Ok(())
    }

    fn sample_server_cpu(&mut self, now: u64, phases: Phases) {
        let Some(pid) = self.args.server_pid else {
            return;
        };
        if now >= phases.measure_start_ns && self.server_cpu_us.0.is_none() {
            self.server_cpu_us.0 = procfs::cpu_us(pid).ok();
        }
        if now >= phases.measure_end_ns && self.server_cpu_us.1.is_none() {
            self.server_cpu_us.1 = procfs::cpu_us(pid).ok();
        }
    }

    fn on_report(&mut self, w: usize, report: Report, phases: Phases) -> Result<()> {
        match report {
            Report::Tick {
                index,
                counters,
                histogram,
                ..
            } => {
                self.latest[w] = counters.clone();
                let agg = self.ticks.entry(index).or_insert_with(|| TickAgg {
                    reported: 0,
                    counters: Counters::default(),
                    hist: hist::new_hist(),
                });
                agg.reported += 1;
                agg.counters.add(&counters);
                hist::merge(&mut agg.hist, &hist::from_bytes(&histogram)?);
                if agg.reported as usize == self.workers {
                    let agg = self.ticks.remove(&index).expect("present");
                    self.complete_tick(index, agg, phases);
                }
            }
            Report::Final(report) => {
                self.latest[w] = report.counters.clone();
                self.finals[w] = Some(*report);
            }
            Report::Progress { counters, .. } | Report::Ready { counters, .. } => {
                self.latest[w] = counters
            }
        }
        Ok(())
    }

    /// Prints the live line of second `index` and keeps its histogram for the interval log.
    fn complete_tick(&mut self, index: u64, agg: TickAgg, phases: Phases) {
        let tick_start_ns = phases.warmup_start_ns + index * NS_PER_S;
        let measured =
            tick_start_ns >= phases.measure_start_ns && tick_start_ns < phases.measure_end_ns;
        let c = &agg.counters;
        let p = &self.previous_tick_counters;
        let replies = (c.replies_ok + c.replies_mismatched + c.push_delivered + c.events_streamed)
            .saturating_sub(
                p.replies_ok + p.replies_mismatched + p.push_delivered + p.events_streamed,
            );
        let errors = c.errors_total().saturating_sub(p.errors_total());
        eprintln!(
            "[{:>3}s {}] sessions {:>7} | {:>9} {}/s | errors {:>5} | p50 {:>8} us | p99 {:>8} us",
            index + 1,
            if measured { "measure" } else { "warm-up" },
            c.sessions_open,
            replies,
            if self.workload == Workload::Push {
                "deliveries"
            } else if self.workload == Workload::Events {
                "events"
            } else {
                "replies"
            },
            errors,
            hist::quantile_us(&agg.hist, 0.5),
            hist::quantile_us(&agg.hist, 0.99),
        );
        self.previous_tick_counters = agg.counters;
        if measured {
            self.measured_ticks.push((index, agg.hist));
        }
    }

    fn into_report(
        self,
        sessions_planned: u64,
        phases: Phases,
        memory: Option<procfs::MemoryPerSession>,
    ) -> Result<RunReport> {
        let mut counters = Counters::default();
        let mut histograms: BTreeMap<String, Hist> = BTreeMap::new();
        let mut client_cpu_ns = 0;
        for f in self.finals.iter().flatten() {
            counters.add(&f.counters);
            client_cpu_ns += f.cpu_ns_measured;
            for (name, bytes) in &f.histograms {
                let h = hist::from_bytes(bytes)?;
                hist::merge(
                    histograms
                        .entry(name.clone())
                        .or_insert_with(hist::new_hist),
                    &h,
                );
            }
        }
        let window_s = (phases.measure_end_ns - phases.measure_start_ns) as f64 / NS_PER_S as f64;
        let server_cpu_us = match self.server_cpu_us {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let events = self.events.map(|(before_run, samples)| {
            let ack_latency = (self.args.ack)
                .then(|| histograms.get(crate::msg::HIST_LATENCY))
                .flatten()
                .filter(|h| !h.is_empty())
                .map(crate::report::Percentiles::of);
            events::EventsSummary::new(events::EventsInputs {
                ack: self.args.ack,
                inflight_events: self.args.inflight_events,
                topic: self.args.event_topic.clone(),
                frame_bytes: events::event_frame(
                    &self.args.event_topic,
                    self.args.payload_bytes as usize,
                    self.args.ack,
                    self.args.max_frame_bytes,
                )
                .map_or(0, |f| f.len() as u64),
                counters: &counters,
                window_s,
                server_cpu_us,
                client_cpu_ns,
                before_run,
                samples,
                ack_latency,
            })
        });
        // events: the server's CPU is set against events accepted, not replies.
        let server_cpu = server_cpu_us.map(|cpu_us| {
            let count = events.as_ref().map_or(counters.replies_measured, |e| {
                (e.accepted_per_s * window_s).round() as u64
            });
            ServerCpu::new(cpu_us, count)
        });
        let burst_cpu_samples = self.burst_cpu_samples;
        let push = self.publisher.map(|publisher| {
            let stream = match self.args.broadcast_burst {
                Some(_) => "broadcast".to_owned(),
                None => format!("topic {}", self.args.topic),
            };
            let stop_ns = phases.measure_end_ns + self.args.drain_ms * NS_PER_MS;
            let mut summary = push::PushSummary::new(stream, publisher, &counters, stop_ns);
            if let Some(samples) = &burst_cpu_samples {
                summary.charge_burst_cpu(samples, &counters);
            }
            summary
        });
        let interval_start_s = (phases.measure_start_ns - phases.warmup_start_ns) / NS_PER_S;
        Ok(RunReport::new(crate::report::RunInputs {
            workload: self.workload,
            args: self.args.clone(),
            workers: self.workers as u32,
            sessions_planned,
            setup_ms: self.setup_ms,
            setup_timed_out: self.setup_timed_out,
            window_s,
            counters,
            histograms,
            client_cpu_ns,
            server_cpu,
            memory,
            push,
            events,
            interval_ticks: self.measured_ticks,
            interval_start_s,
            window_start_wall: std::time::SystemTime::now()
                - Duration::from_nanos(mono_ns().saturating_sub(phases.measure_start_ns)),
        }))
    }
}
