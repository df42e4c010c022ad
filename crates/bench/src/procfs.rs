//! Memory and CPU time of a process, read from Linux's `/proc/<pid>/status` (`VmRSS`,
//! `VmHWM`) and `/proc/<pid>/stat` (`utime` + `stime`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub at: Instant,
}

/// Reads `pid` (use `std::process::id()` for this process).
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(Sample {
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        cpu_ticks: cpu_ticks(&stat).context("parsing /proc/PID/stat")?,
        at: Instant::now(),
    })
}

/// A `Name:   1234 kB` line of `/proc/PID/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// `utime + stime` (fields 14 and 15). The command name (field 2) may hold spaces and
/// parentheses, so counting starts after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux in practice).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// CPU used between two samples, as a share of one core (1.0 = one core busy).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// Wall time between the samples, seconds.
    pub wall_s: f64,
    /// CPU seconds (user + system) spent in that time.
    pub cpu_s: f64,
    /// `cpu_s / wall_s`: cores kept busy on average.
    pub cores: f64,
    /// The same as a percentage of one core.
    pub percent_of_one_core: f64,
}

impl CpuUse {
    pub fn between(a: &Sample, b: &Sample, ticks_per_s: u64) -> Self {
        let wall = b.at.saturating_duration_since(a.at).max(Duration::from_millis(1)).as_secs_f64();
        let cpu = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks_per_s as f64;
        Self { wall_s: wall, cpu_s: cpu, cores: cpu / wall, percent_of_one_core: 100.0 * cpu / wall }
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tward\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        let stat = "42 (wa rd) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 1 1";
        assert_eq!(cpu_ticks(stat), Some(325));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).expect("sample");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
