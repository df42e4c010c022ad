//! What a run counts: latencies in HdrHistograms (microseconds, 3 significant digits),
//! sharded so that a thousand readers rarely wait on one lock, and errors counted by a
//! short label (`http 503`, `timeout`, `ws close 4008 …`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram holds (larger values are clamped to it): one hour.
const HIGHEST_US: u64 = 3_600_000_000;
const SHARDS: usize = 16;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("constant, valid histogram bounds")
}

/// A latency distribution that many tasks record into.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect() }
    }
}

impl Latency {
    /// Records a batch of microsecond values into the shard chosen by `key`.
    pub fn record_all(&self, key: usize, values_us: &[u64]) {
        if values_us.is_empty() {
            return;
        }
        let mut h = self.shards[key % SHARDS].lock().unwrap_or_else(PoisonError::into_inner);
        for v in values_us {
            h.saturating_record((*v).max(1));
        }
    }

    pub fn record(&self, key: usize, value: Duration) {
        self.record_all(key, &[micros(value)]);
    }

    /// The merged distribution's summary.
    pub fn summary(&self) -> Percentiles {
        let mut all = histogram();
        for shard in &self.shards {
            let h = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.add(&*h).expect("histograms with the same bounds add");
        }
        Percentiles::of(&all)
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }

    /// `p50 1.23 ms · p99 … · max …`, or `no samples`.
    pub fn line(&self) -> String {
        if self.samples == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2} ms · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2} (mean {:.2}; {} samples)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p99_9_ms, self.max_ms, self.mean_ms, self.samples
        )
    }
}

/// Errors counted by label.
#[derive(Default)]
pub struct Errors {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Errors {
    pub fn add(&self, label: impl Into<String>) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner).entry(label.into()).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).values().sum()
    }
}

/// `none`, or `label: count, …`.
pub fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_merge_shards() {
        let lat = Latency::default();
        for i in 1..=1000u64 {
            lat.record_all(i as usize, &[i * 1000]);
        }
        let s = lat.summary();
        assert_eq!(s.samples, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn errors_count_by_label() {
        let e = Errors::default();
        e.add("http 503");
        e.add("http 503");
        e.add("timeout");
        assert_eq!(e.total(), 3);
        assert_eq!(errors_line(&e.snapshot()), "http 503: 2, timeout: 1");
    }
}
