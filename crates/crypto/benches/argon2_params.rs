//! How long one argon2id hash takes under candidate parameters, to choose the default
//! (the stronger the better, while a sign-in stays well under a quarter second).
//! Run: `cargo bench -p ward-crypto`. The choice and figures are in docs/authentication.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ward_crypto::PasswordHasher;

fn params(c: &mut Criterion) {
    let mut g = c.benchmark_group("argon2id_hash");
    g.sample_size(10);
    for (name, m, t) in [
        ("m19MiB_t2", 19 * 1024, 2),
        ("m46MiB_t1", 46 * 1024, 1),
        ("m64MiB_t2", 64 * 1024, 2),
        ("m64MiB_t3", 64 * 1024, 3),
    ] {
        let h = PasswordHasher::new(m, t, 1).expect("params");
        g.bench_function(name, |b| b.iter(|| black_box(h.hash("correct horse battery staple").expect("hash"))));
    }
    g.finish();
}

criterion_group!(benches, params);
criterion_main!(benches);
