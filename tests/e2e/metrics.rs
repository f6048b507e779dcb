//! The admin listener: /metrics parsed back as Prometheus text, /healthz, /readyz across a
//! drain, and the probe histograms under `serve --probes`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdfast_protocol::Kind;
use prometheus_parse::{Sample, Scrape, Value};

use crate::support::{admin_request, echo_frame, Server};

/// A GET on the admin listener: (status, body).
fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    admin_request(admin, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
}

pub(crate) fn scrape(server: &Server) -> Scrape {
    let (status, body) = get(server.admin.expect("admin listener"), "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn samples<'a>(scrape: &'a Scrape, metric: &str) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .collect()
}

/// Sum of a counter over all its series.
pub(crate) fn counter_sum(scrape: &Scrape, metric: &str) -> f64 {
    samples(scrape, metric)
        .iter()
        .map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{metric} is not a counter: {other:?}"),
        })
        .sum()
}

/// Total count of a histogram over all its series (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, metric: &str) -> f64 {
    samples(scrape, metric)
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            other => panic!("{metric} is not a histogram: {other:?}"),
        })
        .sum()
}

/// Sends `n` echoes on one session and reads them back.
fn echo_traffic(server: &Server, n: u64) {
    let mut client = server.connect();
    client.hello();
    for id in 0..n {
        let frame = echo_frame(id, b"metrics");
        client.send_raw(&frame);
        assert_eq!(client.recv().bytes, frame);
    }
}

#[test]
fn metrics_parse_with_types_and_shard_labels_and_counters_rise_after_echoes() {
    let server = Server::start("shards = 2\n");
    let before = scrape(&server);
    for metric in ["holdfast_frames_received_total", "holdfast_shard_up"] {
        let mut shards: Vec<&str> = samples(&before, metric)
            .iter()
            .map(|s| s.labels.get("shard").expect("shard label"))
            .collect();
        shards.sort();
        assert_eq!(shards, ["0", "1"], "{metric}");
    }
    for counter in [
        "holdfast_connections_accepted_total",
        "holdfast_sessions_opened_total",
        "holdfast_frames_sent_total",
        "holdfast_received_bytes_total",
        "holdfast_sent_bytes_total",
        "holdfast_requests_total",
        "holdfast_slow_consumers_total",
        "holdfast_accept_table_full_total",
        "holdfast_connections_refused_full_total",
        "holdfast_recv_no_buffers_total",
        "holdfast_drain_unflushed_bytes_total",
        "holdfast_heartbeat_pings_sent_total",
    ] {
        assert_eq!(
            samples(&before, counter).len(),
            2,
            "{counter}: one per shard"
        );
        counter_sum(&before, counter); // panics unless every series is a counter
    }
    assert_eq!(
        samples(&before, "holdfast_connections_closed_total").len(),
        2 * 12,
        "every close reason on every shard"
    );
    assert!(samples(&before, "holdfast_errors_sent_total")
        .iter()
        .any(|s| s.labels.get("code") == Some("bad_version")));
    assert!(samples(&before, "holdfast_connections_open")
        .iter()
        .all(|s| matches!(s.value, Value::Gauge(_))));
    assert!(samples(&before, "holdfast_shard_up")
        .iter()
        .all(|s| s.value == Value::Gauge(1.0)));

    const ECHOES: u64 = 50;
    echo_traffic(&server, ECHOES);
    let after = scrape(&server);
    let frames_in = counter_sum(&after, "holdfast_frames_received_total")
        - counter_sum(&before, "holdfast_frames_received_total");
    assert!(
        frames_in >= (ECHOES + 1) as f64,
        "Hello and {ECHOES} echoes counted, got {frames_in}"
    );
    assert!(
        counter_sum(&after, "holdfast_sessions_opened_total")
            > counter_sum(&before, "holdfast_sessions_opened_total")
    );
    let replies = histogram_count(&after, "holdfast_reply_latency_seconds")
        - histogram_count(&before, "holdfast_reply_latency_seconds");
    assert!(
        replies >= ECHOES as f64,
        "every echo reply timed, got {replies}"
    );
}

#[test]
fn healthz_and_readyz_are_200_while_serving_and_unknown_routes_are_refused() {
    let server = Server::start("shards = 2\n");
    let admin = server.admin.unwrap();
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(get(admin, "/nope").0, 404);
    assert_eq!(
        admin_request(
            admin,
            "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        405
    );
}

#[test]
fn readyz_is_503_after_sigterm_while_a_session_holds_the_drain_and_healthz_stays_200() {
    let mut server =
        Server::start("shards = 1\ndrain_timeout_ms = 20000\nclose_linger_ms = 20000\n");
    let admin = server.admin.unwrap();
    let mut client = server.connect();
    client.hello();
    assert_eq!(get(admin, "/readyz").0, 200);

    server.signal(libc::SIGTERM);
    let start = Instant::now();
    let (status, body) = loop {
        let (status, body) = get(admin, "/readyz");
        if status != 200 || start.elapsed() > Duration::from_secs(5) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    // The session has its Goodbye but has not closed: the shard is alive and answers.
    assert_eq!(client.recv().kind, Kind::Goodbye);
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(get(admin, "/readyz").0, 503);

    drop(client);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn admin_disabled_prints_no_admin_line_and_serves() {
    let server = Server::start("admin_enabled = false\n");
    assert_eq!(server.admin, None);
    server.connect().hello();
}

#[test]
fn serve_with_probes_exports_cpu_memory_and_tcp_probe_metrics() {
    // Fails, never skips, where eBPF cannot be used (tests never print SKIP).
    if let Err(reason) = holdfast_ebpf::availability() {
        panic!("eBPF unavailable, so `serve --probes` cannot attach: {reason} (run the tests as root on a kernel with BTF)");
    }
    let server = Server::start_with_args("shards = 1\n", &[], &["--probes"]);
    echo_traffic(&server, 200);
    let scraped = scrape(&server);
    assert_eq!(
        samples(&scraped, "holdfast_probes_attached")[0].value,
        Value::Gauge(1.0),
        "probes attached (the server logs why if not)"
    );
    for histogram in [
        "holdfast_runqueue_latency_seconds",
        "holdfast_offcpu_seconds",
        "holdfast_oncpu_seconds",
        "holdfast_tcp_srtt_seconds",
        "holdfast_data_ready_to_read_seconds",
    ] {
        assert!(
            histogram_count(&scraped, histogram) > 0.0,
            "{histogram} has samples after 200 echoes"
        );
    }
    assert!(samples(&scraped, "holdfast_page_faults_total").len() == 1);
    assert_eq!(
        samples(&scraped, "holdfast_sched_events_missed_total").len(),
        1
    );
    assert!(samples(&scraped, "holdfast_rss_bytes")
        .iter()
        .any(|s| s.labels.get("kind") == Some("anon") && s.value != Value::Gauge(0.0)));
    assert!(
        samples(&scraped, "holdfast_tcp_state_transitions_total")
            .iter()
            .any(|s| s.labels.get("to") == Some("ESTABLISHED")),
        "the session's handshake seen"
    );
    assert_eq!(samples(&scraped, "holdfast_tcp_retransmits_total").len(), 1);
}
