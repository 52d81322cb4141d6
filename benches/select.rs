//! Micro-benchmarks of pure selection (DESIGN §10): ring lookup (< 100 ns with 100 backends),
//! ring and round-robin builds (reload cost), a round-robin pick, cookie encode and decode.
//! Owns nothing but measurements; touches only `tether::balance`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tether::balance::{cookie::*, ring::Ring, wrr::Wrr};

const NOW: u64 = 1_700_000_000;

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("backend-{i}")).collect()
}

fn ring_of(ids: &[String]) -> Ring {
    Ring::build(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (i as u32, id.as_str(), 1)),
    )
}

fn ring(c: &mut Criterion) {
    let ids100 = ids(100);
    let ring = ring_of(&ids100);
    // Varied keys of session-id length, cycled so lookups hit different parts of the ring.
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("JSESSIONID-{i:08x}-{:016x}", i * 0x9e37_79b9_u64))
        .collect();
    let mut i = 0usize;
    c.bench_function("ring/get/100 backends", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(ring.get(black_box(keys[i].as_bytes())))
        })
    });

    let ids1000 = ids(1000);
    c.bench_function("ring/build/1000 backends", |b| {
        b.iter(|| black_box(ring_of(black_box(&ids1000))))
    });
}

fn wrr(c: &mut Criterion) {
    let wrr = Wrr::build((0..100).map(|i| (i, 1 + i % 4)));
    let mut counter = 0usize;
    c.bench_function("wrr/pick/100 backends", |b| {
        b.iter(|| {
            counter = counter.wrapping_add(1);
            black_box(wrr.pick(black_box(counter)))
        })
    });
    c.bench_function("wrr/build/1000 backends, weights 1 and 256", |b| {
        b.iter(|| {
            black_box(Wrr::build(
                (0..1000).map(|i| (i, if i % 2 == 0 { 256 } else { 1 })),
            ))
        })
    });
}

fn cookie(c: &mut Criterion) {
    let codec = CookieCodec::new(
        "shop",
        &[b"current-secret".to_vec(), b"old-secret".to_vec()],
    );
    let affinity = Affinity {
        backend: backend_digest("shop", "shop-1"),
        nonce: *b"0123456789ab",
        issued: NOW,
    };
    c.bench_function("cookie/encode", |b| {
        b.iter(|| black_box(codec.encode(black_box(&affinity))))
    });
    let value = codec.encode(&affinity);
    c.bench_function("cookie/decode/valid", |b| {
        b.iter(|| {
            black_box(codec.decode(
                black_box(value.as_bytes()),
                black_box(NOW + 60),
                Some(43_200),
            ))
        })
    });
    // A forged cookie costs one HMAC per configured secret.
    let mut forged = value.clone().into_bytes();
    forged[50] = if forged[50] == b'A' { b'B' } else { b'A' };
    c.bench_function("cookie/decode/forged, 2 secrets", |b| {
        b.iter(|| black_box(codec.decode(black_box(&forged), NOW, None)))
    });
    c.bench_function("cookie/backend_digest", |b| {
        b.iter(|| black_box(backend_digest(black_box("shop"), black_box("shop-1"))))
    });
}

criterion_group!(benches, ring, wrr, cookie);
criterion_main!(benches);
