//! Parts shared by both reports: which server was benched and with which settings, its
//! memory, and the bench's own CPU. Each mode prints a human table or, with `--json`,
//! one JSON document on stdout.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::procfs::{self, CpuUse, Sample};
use crate::target::{BENCH_ENV, LogSummary, Server};

/// The server under test.
#[derive(Debug, Serialize)]
pub struct ServerInfo {
    pub url: String,
    /// True when ward-bench started it (then `settings` applies).
    pub spawned: bool,
    pub pid: Option<u32>,
    /// The environment a spawned server ran with (see target::BENCH_ENV).
    pub settings: BTreeMap<String, String>,
    /// What a spawned server logged (warnings and errors), if it was spawned.
    pub log: Option<LogSummary>,
}

impl ServerInfo {
    pub fn of(server: &Server) -> Self {
        let settings = if server.spawned() {
            BENCH_ENV
                .iter()
                .filter(|(k, _, _)| *k != "WARD_MASTER_PASSPHRASE")
                .map(|(k, v, _)| (k.to_string(), v.to_string()))
                .collect()
        } else {
            BTreeMap::new()
        };
        Self {
            url: server.http.clone(),
            spawned: server.spawned(),
            pid: server.pid,
            settings,
            log: server.spawned().then(|| server.log.summary()),
        }
    }

    pub fn print(&self) {
        let how = if self.spawned { "spawned by ward-bench" } else { "already running" };
        let pid = self.pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
        row("server", format!("{} ({how}, {pid})", self.url));
        if !self.settings.is_empty() {
            let s: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row("server settings", s.join(" "));
        }
        if let Some(log) = &self.log {
            row("server log", format!("{} lines, {} warnings, {} errors", log.lines, log.warnings, log.errors));
            for line in &log.last_problems {
                row("", shorten(line, 160));
            }
        }
    }
}

/// The server's memory at the points a mode samples, in MiB.
pub fn sample_server(server: &Server) -> Option<Sample> {
    server.pid.and_then(|pid| procfs::sample(pid).ok())
}

/// CPU use of this process between two samples.
pub fn own_cpu(from: &Sample, ticks: u64) -> Option<CpuUse> {
    procfs::sample(std::process::id()).ok().map(|now| CpuUse::between(from, &now, ticks))
}

pub fn cpu_line(cpu: &CpuUse) -> String {
    format!(
        "{:.1} % of one core ({:.2} cores; {:.1} CPU-s in {:.1} s)",
        cpu.percent_of_one_core, cpu.cores, cpu.cpu_s, cpu.wall_s
    )
}

/// One line of a human report: a left column of 22 characters, then the value.
pub fn row(label: &str, value: impl std::fmt::Display) {
    println!("{label:<22} {value}");
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
