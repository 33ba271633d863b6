#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
//! Micro-benchmarks of the protocol core: `cargo bench -p hubbub-proto`.
//!
//! Results and the machine they ran on are in BENCHMARKS.md.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hubbub_proto::handshake::RequestParser;
use hubbub_proto::{Config, Connection, FrameHeader, OpCode, Role, Utf8Bytes, apply_mask};

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [20usize, 1024, 64 * 1024, 1 << 20] {
        let mut buf = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("word", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| {
                for (i, byte) in black_box(&mut buf).iter_mut().enumerate() {
                    *byte ^= [1, 2, 3, 4][(i + 1) & 3];
                }
            })
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (name, unit) in [("ascii", "hello world, "), ("mixed", "κόσμε 日本 𝄞 a")] {
        let text = unit.repeat((64 * 1024) / unit.len());
        let bytes = Bytes::from(text.clone());
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("validate", name), |b| {
            b.iter(|| Utf8Bytes::try_from_bytes(black_box(bytes.clone())).is_ok())
        });
        group.bench_function(BenchmarkId::new("std", name), |b| {
            b.iter(|| std::str::from_utf8(black_box(&bytes)).is_ok())
        });
    }
    // What a second validation in `Utf8Bytes::as_str` would cost a 64 KiB
    // message, against the unchecked view.
    let text = Utf8Bytes::from("κόσμε 日本 𝄞 a".repeat(4096));
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("as_str/unchecked", |b| {
        b.iter(|| black_box(&text).as_str().len())
    });
    group.bench_function("as_str/revalidate", |b| {
        b.iter(|| simdutf8::basic::from_utf8(black_box(text.as_bytes())).map(str::len))
    });
    group.finish();
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    let header = FrameHeader {
        mask: Some([1, 2, 3, 4]),
        ..FrameHeader::new(OpCode::Binary, 70_000)
    };
    let encoded = header.encode();
    group.bench_function("header_parse", |b| {
        b.iter(|| FrameHeader::parse(black_box(encoded.as_bytes())))
    });
    group.bench_function("header_encode", |b| b.iter(|| black_box(header).encode()));

    // A read of 64 masked 20-byte text frames, as a busy echo server sees.
    let mut client = Connection::new(Role::Client, Config::default());
    let mut wire = BytesMut::new();
    for _ in 0..64 {
        client.send_text("01234567890123456789", &mut wire).unwrap();
    }
    let wire = wire.freeze();
    group.throughput(Throughput::Elements(64));
    group.bench_function("server_read_64x20B", |b| {
        let mut server = Connection::new(Role::Server, Config::default());
        let mut out = BytesMut::new();
        b.iter(|| {
            let mut input = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Ok(Some(_)) = server.read(&mut input, &mut out) {
                n += 1;
            }
            n
        })
    });
    group.bench_function("server_send_64x20B", |b| {
        let mut server = Connection::new(Role::Server, Config::default());
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            for _ in 0..64 {
                server
                    .send_text(black_box("01234567890123456789"), &mut out)
                    .unwrap();
            }
        })
    });
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    let good = "GET /chat HTTP/1.1\r\nHost: localhost:8181\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nOrigin: http://localhost:8181\r\n\r\n";
    let config = Config::default();
    group.bench_function("parse_and_accept", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(good);
            let request = RequestParser::new(&config)
                .parse(&mut buf)
                .unwrap()
                .unwrap();
            request.validate_upgrade().unwrap()
        })
    });
    let spaces = format!("GET / HTTP/1.1\r\nX: {}", " ".repeat(100_000));
    group.bench_function("reject_100k_spaces", |b| {
        b.iter(|| {
            RequestParser::new(&config)
                .parse(&mut BytesMut::from(&spaces[..]))
                .is_err()
        })
    });
    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..500 {
        many += &format!("X-{i}: v\r\n");
    }
    many += "\r\n";
    group.bench_function("reject_500_headers", |b| {
        b.iter(|| {
            RequestParser::new(&config)
                .parse(&mut BytesMut::from(&many[..]))
                .is_err()
        })
    });
    group.finish();
}

criterion_group!(benches, unmask, utf8, frames, handshake);
criterion_main!(benches);
