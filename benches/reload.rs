//! Reload cost (DESIGN.md §10: a 1,000-backend config under 50 ms): parse + validate + build
//! the snapshot + swap, for a cookie pool (two rings) of 1,000 backends — once with the same
//! members (live views reused) and once with one backend's weight changed (rings rebuilt).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tether::snapshot::Store;
use tether::state::backend::Registry;
use tether::state::metrics::Metrics;

fn config_text(weight_of_first: u32) -> String {
    let mut s = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[affinity]\nsecret = \"bench-secret-0123456789abcdef\"\n\
         [[route]]\npool = \"big\"\n[pool.big]\npolicy = \"cookie\"\n",
    );
    for i in 0..1000u32 {
        let w = if i == 0 { weight_of_first } else { 1 };
        s.push_str(&format!(
            "[[pool.big.backend]]\nid = \"b{i}\"\naddr = \"10.{}.{}.{}:8080\"\nweight = {w}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    s
}

fn reload(c: &mut Criterion) {
    let texts = [config_text(1), config_text(2)];
    let store = Store::new(
        tether::config::parse(&texts[0], None).unwrap(),
        Arc::new(Registry::new(Arc::new(Metrics::new()))),
    );
    let mut g = c.benchmark_group("reload_1000_backends");
    g.sample_size(20);
    g.bench_function("parse_validate", |b| {
        b.iter(|| tether::config::parse(&texts[0], None).unwrap())
    });
    g.bench_function("install_unchanged_members", |b| {
        b.iter(|| store.install(tether::config::parse(&texts[0], None).unwrap()))
    });
    let mut i = 0;
    g.bench_function("install_changed_weight", |b| {
        b.iter(|| {
            i += 1;
            store.install(tether::config::parse(&texts[i % 2], None).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
