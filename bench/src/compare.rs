//! `holdfast-bench compare`: the same echo workload (same client, same frames, same connection
//! counts) against Holdfast and each baseline, server restarted for every measurement, targets
//! rotated between runs so drift on a shared machine hits each alike. Reports server CPU per
//! round trip (/proc/PID/stat) and round trips per server CPU-second, medians and spread over
//! `--runs`, and the ratio table that docs/PERFORMANCE.md quotes.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::cli::{CompareArgs, RunArgs};
use crate::clock::{mono_ns, NS_PER_MS};
use crate::coordinator;
use crate::msg::Workload;
use crate::transport::TransportKind;

/// How long a server gets to exit after SIGTERM before SIGKILL.
const SERVER_STOP_TIMEOUT_MS: u64 = 5_000;
/// Holdfast measured on tls, ws or wss still has its plain listener and admin listener: they go
/// on the measured port plus these offsets.
const HOLDFAST_PLAIN_PORT_OFFSET: u16 = 2_000;
const HOLDFAST_ADMIN_PORT_OFFSET: u16 = 4_000;

/// The server a transport's Holdfast figure is divided by (same transport, task per connection).
pub fn transport_baseline(transport: TransportKind) -> &'static str {
    match transport {
        TransportKind::Tcp => "tokio",
        TransportKind::Tls => "tokio-rustls",
        TransportKind::Ws | TransportKind::Wss => "tokio-tungstenite",
    }
}

/// The targets measured on one transport: --targets on tcp, Holdfast and its baseline otherwise.
fn transport_targets(transport: TransportKind, args: &CompareArgs) -> Vec<String> {
    match transport {
        TransportKind::Tcp => args.targets.clone(),
        other => vec!["holdfast".to_owned(), transport_baseline(other).to_owned()],
    }
}

/// The PEM files of the run's self-signed certificate (for localhost and 127.0.0.1).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a fresh self-signed certificate and key under `dir` (made for this run, never kept
/// in the repository).
pub fn write_self_signed(dir: &Path) -> Result<TlsFiles> {
    std::fs::create_dir_all(dir)?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("certificate names")?;
    let key = rcgen::KeyPair::generate().context("key pair")?;
    let cert = params.self_signed(&key).context("self-sign")?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}

/// One measurement of one target.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub target: String,
    pub transport: TransportKind,
    pub connections: u32,
    pub run: u32,
    pub replies_per_s: f64,
    pub server_cpu_us_per_round_trip: f64,
    pub round_trips_per_server_cpu_s: f64,
    pub replies_per_client_cpu_s: f64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub errors: u64,
    pub requests_unaccounted: i64,
}

#[derive(Parser)]
struct RunArgsDefaults {
    #[command(flatten)]
    args: RunArgs,
}

fn server_command(
    target: &str,
    transport: TransportKind,
    args: &CompareArgs,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
) -> Result<Command> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .to_owned();
    let cores = args.server_cores.to_string();
    let listen_addr = listen;
    let listen = listen.to_string();
    let tls_args = |tls: Option<&TlsFiles>| -> Result<Vec<String>> {
        let tls = tls.context("a TLS transport needs the run's certificate")?;
        Ok(vec![
            "--cert".to_owned(),
            tls.cert.display().to_string(),
            "--key".to_owned(),
            tls.key.display().to_string(),
        ])
    };
    let (bin, extra): (PathBuf, Vec<String>) = match target {
        "holdfast" => {
            let bin = args
                .holdfast_bin
                .clone()
                .unwrap_or_else(|| exe_dir.join("holdfast"));
            let mut extra = vec!["serve".to_owned(), "--shards".to_owned(), cores];
            if transport == TransportKind::Tcp {
                extra.extend(["--listen".to_owned(), listen]);
            } else {
                let config = holdfast_transport_config(transport, listen_addr, tls, &args.out)?;
                extra.extend(["--config".to_owned(), config.display().to_string()]);
            }
            (bin, extra)
        }
        "glommio" | "tokio" | "tokio-rustls" | "tokio-tungstenite" => {
            let dir = args.baselines_dir.clone().unwrap_or(exe_dir);
            let mut extra = vec!["--listen".to_owned(), listen, "--cores".to_owned(), cores];
            if transport.uses_tls() {
                extra.extend(tls_args(tls)?);
            }
            (dir.join(format!("holdfast-baseline-{target}")), extra)
        }
        other => bail!(
            "unknown target {other:?}: use holdfast, glommio, tokio, tokio-rustls, tokio-tungstenite"
        ),
    };
    if !bin.exists() {
        bail!(
            "{} not found (build it: cargo build --release -p holdfast-server / -p holdfast-bench)",
            bin.display()
        );
    }
    let mut command = Command::new(bin);
    command.args(extra);
    Ok(command)
}

/// A config file for Holdfast measured on `transport`: its TLS or WebSocket listener on `listen`
/// (wss: the TLS listener, which upgrades ALPN http/1.1 connections), the plain and admin
/// listeners moved out of the way.
fn holdfast_transport_config(
    transport: TransportKind,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    out: &Path,
) -> Result<PathBuf> {
    let offset = |by: u16| SocketAddr::new(listen.ip(), listen.port().wrapping_add(by).max(1024));
    let mut toml = format!(
        "listen = \"{}\"\nadmin_listen = \"{}\"\n",
        offset(HOLDFAST_PLAIN_PORT_OFFSET),
        offset(HOLDFAST_ADMIN_PORT_OFFSET)
    );
    if transport.uses_tls() {
        let tls = tls.context("a TLS transport needs the run's certificate")?;
        toml.push_str(&format!(
            "tls_listen = \"{listen}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            tls.cert.display(),
            tls.key.display()
        ));
    } else {
        toml.push_str(&format!("ws_listen = \"{listen}\"\n"));
    }
    if transport.uses_ws() {
        toml.push_str("ws_path = \"/ws\"\n");
    }
    let dir = out.join("compare-logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("holdfast-{}.toml", transport.name()));
    std::fs::write(&path, toml)?;
    Ok(path)
}

fn start_server(
    target: &str,
    transport: TransportKind,
    args: &CompareArgs,
    listen: SocketAddr,
    log: &Path,
    tls: Option<&TlsFiles>,
) -> Result<Child> {
    let log_file = std::fs::File::create(log)?;
    let mut child = server_command(target, transport, args, listen, tls)?
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("start {target}"))?;
    let deadline = mono_ns() + args.server_start_timeout_ms * NS_PER_MS;
    while mono_ns() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{target} exited at start ({status}); see {}", log.display());
        }
        if TcpStream::connect_timeout(&listen, Duration::from_millis(100)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    bail!(
        "{target} did not listen on {listen} within {} ms; see {}",
        args.server_start_timeout_ms,
        log.display()
    )
}

fn stop_server(mut child: Child) {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = mono_ns() + SERVER_STOP_TIMEOUT_MS * NS_PER_MS;
    while mono_ns() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `--attach NAME=ADDR@PID` for `target`, if given.
pub fn attached(target: &str, attach: &[String]) -> Result<Option<(SocketAddr, u32)>> {
    for spec in attach {
        let (name, rest) = spec
            .split_once('=')
            .context("--attach wants NAME=ADDR@PID")?;
        if name != target {
            continue;
        }
        let (addr, pid) = rest
            .split_once('@')
            .context("--attach wants NAME=ADDR@PID")?;
        return Ok(Some((
            addr.parse().context("--attach ADDR")?,
            pid.parse().context("--attach PID")?,
        )));
    }
    Ok(None)
}

fn measure(
    target: &str,
    transport: TransportKind,
    connections: u32,
    run: u32,
    port: u16,
    args: &CompareArgs,
    tls: Option<&TlsFiles>,
) -> Result<Sample> {
    let logs = args.out.join("compare-logs");
    std::fs::create_dir_all(&logs)?;
    let (listen, server, pid) = match attached(target, &args.attach)? {
        Some((addr, pid)) => (addr, None, pid),
        None => {
            let listen: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = logs.join(format!(
                "{target}-{}-{connections}-{run}.log",
                transport.name()
            ));
            let server = start_server(target, transport, args, listen, &log, tls)?;
            let pid = server.id();
            (listen, Some(server), pid)
        }
    };
    let mut run_args = RunArgsDefaults::parse_from(["compare"]).args;
    run_args.target = listen;
    run_args.sessions = connections;
    run_args.workers = args.workers;
    run_args.raw = args.raw;
    run_args.warmup_s = args.warmup_s;
    run_args.duration_s = args.duration_s;
    run_args.payload_bytes = args.payload_bytes;
    run_args.inflight = args.inflight;
    run_args.server_pid = Some(pid);
    run_args.out = args.out.join("compare-runs");
    run_args.label = Some(format!(
        "{target}-{}-{connections}-run{run}",
        transport.name()
    ));
    run_args.transport = transport;
    run_args.tls_ca = tls.map(|t| t.cert.clone());
    run_args.ws_path = "/ws".to_owned();
    let result = coordinator::run(Workload::Echo, &run_args);
    if let Some(server) = server {
        stop_server(server);
    }
    let mut report = result?;
    report.write_files(&run_args.out)?;
    let cpu = report.server_cpu.clone().context("no server CPU sample")?;
    let latency = &report.histograms.get("latency");
    Ok(Sample {
        target: target.to_owned(),
        transport,
        connections,
        run,
        replies_per_s: report.replies_per_s,
        server_cpu_us_per_round_trip: cpu.cpu_us_per_round_trip,
        round_trips_per_server_cpu_s: cpu.round_trips_per_cpu_s,
        replies_per_client_cpu_s: report.replies_per_client_cpu_s,
        latency_p50_us: latency.map_or(0, |p| p.p50_us),
        latency_p99_us: latency.map_or(0, |p| p.p99_us),
        errors: report.errors_total,
        requests_unaccounted: report.requests_unaccounted,
    })
}

/// Median of a non-empty list (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty());
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let mut samples: Vec<Sample> = Vec::new();
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    let mut port = args.port_base;
    let tls = if args.transports.iter().any(|t| t.uses_tls()) {
        Some(write_self_signed(&args.out.join("compare-tls"))?)
    } else {
        None
    };
    for run in 0..args.runs {
        for &transport in &args.transports {
            let targets = transport_targets(transport, args);
            for &connections in &args.connections {
                let n = targets.len();
                for k in 0..n {
                    let target = &targets[(k + run as usize) % n];
                    let key = format!("{target}/{}", transport.name());
                    if skipped.contains_key(&key) {
                        continue;
                    }
                    port = port.wrapping_add(1).max(1024);
                    eprintln!(
                        "== compare run {}/{} {target} over {} {connections} connections (port {port})",
                        run + 1,
                        args.runs,
                        transport.name()
                    );
                    match measure(
                        target,
                        transport,
                        connections,
                        run,
                        port,
                        args,
                        tls.as_ref(),
                    ) {
                        Ok(sample) => samples.push(sample),
                        Err(e)
                            if run == 0
                                && samples
                                    .iter()
                                    .all(|s| &s.target != target || s.transport != transport) =>
                        {
                            eprintln!("skipping {key}: {e:#}");
                            skipped.insert(key, format!("{e:#}"));
                        }
                        Err(e) => {
                            return Err(
                                e.context(format!("{key} at {connections} connections, run {run}"))
                            )
                        }
                    }
                }
            }
        }
    }
    let tcp: Vec<Sample> = samples
        .iter()
        .filter(|s| s.transport == TransportKind::Tcp)
        .cloned()
        .collect();
    if !tcp.is_empty() {
        print_table(args, &tcp, &skipped);
    }
    if args.transports.iter().any(|&t| t != TransportKind::Tcp) {
        print_transport_table(args, &samples);
    }
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("compare.json");
    let json =
        serde_json::json!({ "args": format!("{args:?}"), "samples": samples, "skipped": skipped });
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Holdfast against the same transport's baseline: round trips per server CPU-second.
fn print_transport_table(args: &CompareArgs, samples: &[Sample]) {
    println!(
        "\nTransports: echo, {}-byte frames, {} in flight per connection, server on {} core(s), {} s measured after {} s warm-up, {} run(s); medians [min..max]",
        args.payload_bytes + 16,
        args.inflight,
        args.server_cores,
        args.duration_s,
        args.warmup_s,
        args.runs
    );
    println!("| transport | connections | Holdfast round trips per server CPU-s | baseline | baseline round trips per server CPU-s | Holdfast / baseline | Holdfast p99 us | baseline p99 us |");
    println!("|---|---|---|---|---|---|---|---|");
    let pick = |target: &str, transport: TransportKind, connections: u32, f: fn(&Sample) -> f64| {
        samples
            .iter()
            .filter(|s| {
                s.target == target && s.transport == transport && s.connections == connections
            })
            .map(f)
            .collect::<Vec<f64>>()
    };
    let spread = |v: &[f64]| {
        if v.is_empty() {
            return "-".to_owned();
        }
        format!(
            "{:.0} [{:.0}..{:.0}]",
            median(v),
            v.iter().copied().fold(f64::MAX, f64::min),
            v.iter().copied().fold(0.0, f64::max)
        )
    };
    let p99 = |v: &[f64]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0}", median(v))
        }
    };
    for &transport in &args.transports {
        let baseline = transport_baseline(transport);
        for &connections in &args.connections {
            let eff = |target| {
                pick(target, transport, connections, |s| {
                    s.round_trips_per_server_cpu_s
                })
            };
            let lat = |target| pick(target, transport, connections, |s| s.latency_p99_us as f64);
            let (ours, theirs) = (eff("holdfast"), eff(baseline));
            let ratio = if ours.is_empty() || theirs.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}x", median(&ours) / median(&theirs))
            };
            println!(
                "| {} | {connections} | {} | {baseline} | {} | {ratio} | {} | {} |",
                transport.name(),
                spread(&ours),
                spread(&theirs),
                p99(&lat("holdfast")),
                p99(&lat(baseline)),
            );
        }
    }
    let bad = samples
        .iter()
        .filter(|s| s.errors > 0 || s.requests_unaccounted != 0)
        .count();
    if bad > 0 {
        println!("WARNING: {bad} measurements had errors or unaccounted requests (compare.json)");
    }
}

fn print_table(args: &CompareArgs, samples: &[Sample], skipped: &BTreeMap<String, String>) {
    println!(
        "\nEcho, {}-byte frames, {} in flight per connection, server on {} core(s), {} s measured after {} s warm-up, {} run(s); medians [min..max]",
        args.payload_bytes + 16,
        args.inflight,
        args.server_cores,
        args.duration_s,
        args.warmup_s,
        args.runs
    );
    println!("| target | connections | round trips/s | server CPU us per round trip | round trips per server CPU-s | vs glommio | vs tokio | p99 us |");
    println!("|---|---|---|---|---|---|---|---|");
    let pick = |target: &str, connections: u32, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.target == target && s.connections == connections)
            .map(f)
            .collect()
    };
    for &connections in &args.connections {
        for target in &args.targets {
            let eff = pick(target, connections, |s| s.round_trips_per_server_cpu_s);
            if eff.is_empty() {
                continue;
            }
            let spread = |v: &[f64]| {
                format!(
                    "{:.0} [{:.0}..{:.0}]",
                    median(v),
                    v.iter().copied().fold(f64::MAX, f64::min),
                    v.iter().copied().fold(0.0, f64::max)
                )
            };
            let ratio = |base: &str| {
                let base_eff = pick(base, connections, |s| s.round_trips_per_server_cpu_s);
                if base_eff.is_empty() || base == target {
                    "-".to_owned()
                } else {
                    format!("{:.2}x", median(&eff) / median(&base_eff))
                }
            };
            let us = pick(target, connections, |s| s.server_cpu_us_per_round_trip);
            println!(
                "| {target} | {connections} | {} | {:.2} [{:.2}..{:.2}] | {} | {} | {} | {:.0} |",
                spread(&pick(target, connections, |s| s.replies_per_s)),
                median(&us),
                us.iter().copied().fold(f64::MAX, f64::min),
                us.iter().copied().fold(0.0, f64::max),
                spread(&eff),
                ratio("glommio"),
                ratio("tokio"),
                median(&pick(target, connections, |s| s.latency_p99_us as f64)),
            );
        }
    }
    let client = samples
        .iter()
        .map(|s| s.replies_per_client_cpu_s)
        .fold(f64::MAX, f64::min);
    if !samples.is_empty() {
        println!("client: at least {client:.0} replies per client CPU-second in every measurement");
    }
    let bad: Vec<_> = samples
        .iter()
        .filter(|s| s.errors > 0 || s.requests_unaccounted != 0)
        .collect();
    if !bad.is_empty() {
        println!(
            "WARNING: {} measurements had errors or unaccounted requests: {:?}",
            bad.len(),
            bad
        );
    }
    for (target, reason) in skipped {
        println!("skipped {target}: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::{attached, median};

    #[test]
    fn attach_names_a_running_server_by_address_and_pid() {
        let specs = vec![
            "tokio=127.0.0.1:9000@77".to_owned(),
            "holdfast=127.0.0.1:7878@4242".to_owned(),
        ];
        assert_eq!(
            attached("holdfast", &specs).unwrap(),
            Some(("127.0.0.1:7878".parse().unwrap(), 4242))
        );
        assert_eq!(attached("glommio", &specs).unwrap(), None);
        assert!(attached("x", &["x=nonsense".to_owned()]).is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
