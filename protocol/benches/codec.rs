//! Decode+validate and encode cost per frame of a Hello, a 64-byte Echo and a 1 KiB Push.
//!
//! `cargo bench -p holdfast-protocol` (on a busy machine add
//! `-- --warm-up-time 1 --measurement-time 3`). Decode runs `next_frame` over one encoded frame
//! (header checks plus rkyv validation, read in place); encode appends into a reused `BytesMut`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use holdfast_protocol::{
    encode_frame, encode_raw, next_frame,
    payload::{Hello, Push},
    EncodeError, Kind, Payload, MAX_FRAME_BYTES_DEFAULT as MAX,
};

const TOKEN: [u8; 40] = [0xab; 40];
const ECHO: [u8; 64] = [0x5a; 64];
const PUSH: [u8; 1024] = [0x77; 1024];

fn hello() -> Hello<'static> {
    Hello {
        client_id: "client-000042",
        token: &TOKEN,
        versions: &[1],
        heartbeat_ms: 5000,
    }
}

fn push() -> Push<'static> {
    Push {
        topic: "prices.eurusd",
        seq: 1_000_000,
        payload: &PUSH,
    }
}

fn encoded(write: impl FnOnce(&mut BytesMut) -> Result<usize, EncodeError>) -> BytesMut {
    let mut out = BytesMut::with_capacity(4096);
    write(&mut out).expect("sample frame encodes");
    out
}

/// Decodes the frame in `buf` and touches its payload so validation cannot be skipped.
fn decode(buf: &[u8]) -> usize {
    let frame = next_frame(black_box(buf), MAX).unwrap().unwrap();
    match frame.payload {
        Payload::Hello(Some(hello)) => hello.client_id.len(),
        Payload::Echo(bytes) => bytes.len(),
        Payload::Push(push) => push.payload.len(),
        _ => unreachable!(),
    }
}

fn decode_benches(c: &mut Criterion) {
    let hello = encoded(|out| encode_frame(out, 0, 1, &hello(), MAX));
    let echo = encoded(|out| encode_raw(out, Kind::Echo, 0, 1, &ECHO, MAX));
    let push = encoded(|out| encode_frame(out, 0, 1, &push(), MAX));
    // The same Push one byte into a buffer: payloads are unaligned archives, valid at any offset.
    let mut push_odd = vec![0u8];
    push_odd.extend_from_slice(&push);

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("hello_{}B", hello.len()), |b| {
        b.iter(|| decode(&hello))
    });
    group.bench_function(format!("echo_64_{}B", echo.len()), |b| {
        b.iter(|| decode(&echo))
    });
    group.bench_function(format!("push_1k_{}B", push.len()), |b| {
        b.iter(|| decode(&push))
    });
    group.bench_function("push_1k_odd_offset", |b| b.iter(|| decode(&push_odd[1..])));
    group.finish();
}

fn encode_benches(c: &mut Criterion) {
    let mut out = BytesMut::with_capacity(4096);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hello", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(&mut out, 0, 1, black_box(&hello()), MAX).unwrap()
        })
    });
    group.bench_function("echo_64", |b| {
        b.iter(|| {
            out.clear();
            encode_raw(&mut out, Kind::Echo, 0, 1, black_box(&ECHO), MAX).unwrap()
        })
    });
    group.bench_function("push_1k", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(&mut out, 0, 1, black_box(&push()), MAX).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, decode_benches, encode_benches);
criterion_main!(benches);
