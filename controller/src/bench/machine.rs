//! The machine a benchmark ran on, for the record.

use serde::Serialize;

/// CPU model and core count.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model as the kernel reports it.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
}

impl Machine {
    /// Reads the current machine.
    pub fn current() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        }
    }
}
