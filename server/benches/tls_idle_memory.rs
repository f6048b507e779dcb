//! User memory of idle TLS sessions after the handshake: `SESSIONS` server sessions are made
//! (each boxed, as a shard would keep it), each does a handshake with an in-memory rustls client
//! and one 64-byte exchange each way, then the clients are dropped and the heap bytes the sessions
//! still hold are counted with dhat (requested bytes; the allocator rounds each block up to its
//! size class on top). The allocation sites still live are listed with their share, so the
//! figure can be read line by line.
//!
//!   cargo bench -p holdfast-server --bench tls_idle_memory
//!
//! Writes dhat's profiles (viewable in DHAT's viewer) next to the build output.

#[path = "support/tls_pair.rs"]
mod tls_pair;

use std::io::Write;
use std::ops::ControlFlow;

use bytes::BytesMut;
use holdfast_server::transport::tls::{self, TlsSession};
use tls_pair::{
    client, client_config, client_output, handshake, server_config, test_cert, to_client,
};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SESSIONS: usize = 1_000;
/// Allocation sites listed per version.
const SITES_SHOWN_MAX: usize = 14;

fn main() {
    let cert = test_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let server_config = server_config(&cert, tls::crypto_provider());
    let out_dir = std::path::PathBuf::from(
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    );
    println!(
        "size_of::<TlsSession>() = {} bytes (inline; counted below as part of its Box)",
        std::mem::size_of::<TlsSession>()
    );
    for (name, version) in [
        ("tls13", &rustls::version::TLS13),
        ("tls12", &rustls::version::TLS12),
    ] {
        let client_config = client_config(&cert, version, None);
        let mut sessions: Vec<Box<TlsSession>> = Vec::with_capacity(SESSIONS);
        let profile = out_dir.join(format!("tls-idle-memory-{name}.json"));
        let profiler = dhat::Profiler::builder().file_name(&profile).build();
        let before = dhat::HeapStats::get();
        for _ in 0..SESSIONS {
            let mut server = Box::new(TlsSession::new(server_config.clone()).expect("session"));
            let mut client = client(&client_config);
            handshake(&mut server, &mut client, |f| f());
            exchange(&mut server, &mut client);
            assert_eq!(server.held_capacity_bytes(), 0);
            drop(client);
            sessions.push(server);
        }
        let after = dhat::HeapStats::get();
        let bytes = after.curr_bytes - before.curr_bytes;
        let blocks = after.curr_blocks - before.curr_blocks;
        println!(
            "{name}: {SESSIONS} idle sessions hold {bytes} heap bytes in {blocks} blocks: \
             {} bytes and {:.1} blocks per session",
            bytes / SESSIONS,
            blocks as f64 / SESSIONS as f64
        );
        drop(profiler);
        print_sites(&profile, SESSIONS);
        drop(sessions);
    }
    std::io::stdout().flush().ok();
}

/// One 64-byte message each way, so the session is in its steady state.
fn exchange(server: &mut TlsSession, client: &mut rustls::ClientConnection) {
    client.writer().write_all(&[1u8; 64]).expect("client write");
    let mut bytes = client_output(client);
    let mut out = BytesMut::new();
    let mut got = 0;
    server
        .receive(&mut bytes, &mut out, |p| {
            got += p.len();
            ControlFlow::Continue(())
        })
        .expect("receive");
    assert_eq!(got, 64);
    server.encrypt(&[2u8; 64], &mut out).expect("encrypt");
    assert_eq!(to_client(client, &out).len(), 64);
}

/// The allocation sites still live at the end of the profile (the idle sessions), largest
/// first, each named by its innermost frame in rustls, ring or holdfast.
fn print_sites(profile: &std::path::Path, sessions: usize) {
    let text = std::fs::read_to_string(profile).expect("dhat profile");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dhat json");
    let frames: Vec<&str> = json["ftbl"]
        .as_array()
        .expect("ftbl")
        .iter()
        .map(|f| f.as_str().unwrap_or(""))
        .collect();
    let mut sites: Vec<(u64, u64, String)> = json["pps"]
        .as_array()
        .expect("pps")
        .iter()
        .filter_map(|pp| {
            let end_bytes = pp["eb"].as_u64()?;
            let end_blocks = pp["ebk"].as_u64()?;
            if end_bytes == 0 {
                return None;
            }
            let site = pp["fs"]
                .as_array()?
                .iter()
                .filter_map(|i| frames.get(i.as_u64()? as usize))
                .map(|f| frame_name(f))
                .find(|f| {
                    (f.contains("rustls") || f.contains("ring::") || f.contains("holdfast"))
                        && !f.contains("tls_pair")
                })
                .unwrap_or_else(|| "(no rustls/ring/holdfast frame)".into());
            Some((end_bytes, end_blocks, site))
        })
        .collect();
    sites.sort_by_key(|site| std::cmp::Reverse(site.0));
    for (end_bytes, end_blocks, site) in sites.iter().take(SITES_SHOWN_MAX) {
        println!(
            "  {:>6.1} B/session in {:>4.2} blocks  {site}",
            *end_bytes as f64 / sessions as f64,
            *end_blocks as f64 / sessions as f64,
        );
    }
    if sites.len() > SITES_SHOWN_MAX {
        let rest: u64 = sites[SITES_SHOWN_MAX..].iter().map(|s| s.0).sum();
        println!(
            "  {:>6.1} B/session in {} more sites",
            rest as f64 / sessions as f64,
            sites.len() - SITES_SHOWN_MAX
        );
    }
}

/// "0x1234: path::to::fn (file.rs:1:2)" -> "path::to::fn (file.rs:1:2)".
fn frame_name(frame: &str) -> String {
    frame
        .split_once(": ")
        .map_or(frame, |(_, rest)| rest)
        .to_string()
}
