//! Seal/open throughput of Ward's envelope AEAD (AES-256-GCM via aws-lc-rs), for 1 KiB
//! messages and 16 MiB blobs. Compare with `openssl speed -evp aes-256-gcm` on the same
//! machine (docs/key-management.md has both).

use std::hint::black_box;

use criterion::BatchSize;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ward_keys::{DataKey, open, open_in_place, seal};

fn bench(c: &mut Criterion) {
    let key = DataKey::generate();
    let aad = b"ward:message|0193-example|v1";
    let mut g = c.benchmark_group("aead");
    for (name, size) in [("1KiB", 1024usize), ("16MiB", 16 * 1024 * 1024)] {
        let plain = vec![0x5au8; size];
        let sealed = seal(&key, aad, &plain).expect("seal");
        g.throughput(Throughput::Bytes(size as u64));
        if size > 1024 * 1024 {
            g.sample_size(20);
        }
        g.bench_function(format!("seal_{name}"), |b| b.iter(|| black_box(seal(&key, aad, &plain).expect("seal"))));
        g.bench_function(format!("open_{name}"), |b| b.iter(|| black_box(open(&key, aad, &sealed).expect("open"))));
        g.bench_function(format!("open_in_place_{name}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| black_box(open_in_place(&key, aad, buf).expect("open").len()),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
