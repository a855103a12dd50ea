//! Sizes a user asks for, checked against what the machine has before any work starts, so a
//! large `--bits` or `--seconds` is refused with the limit named instead of ending in the OOM
//! killer hours later or a disk filled half way through a recording.

use std::path::Path;

use anyhow::{Result, bail};

/// A resource a command would need, and where the limit on it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    bytes: u64,
    source: &'static str,
}

/// Refuses `bytes` of working memory for `what` (e.g. `--bits 100000000`) when more than what
/// the machine can give: available RAM, the cgroup's memory limit or the address-space limit.
pub fn ensure_memory(what: &str, bytes: u64) -> Result<()> {
    match memory_limit() {
        Some(limit) => check(what, bytes, limit, "memory"),
        None => Ok(()),
    }
}

/// Refuses writing `bytes` to `path` for `what` when its file system has less free space.
pub fn ensure_disk(path: &Path, what: &str, bytes: u64) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let Ok(stats) = rustix::fs::statvfs(directory) else {
        // Creating the file names the directory's problem better than statvfs would.
        return Ok(());
    };
    let free = Limit {
        bytes: stats.f_bavail.saturating_mul(stats.f_frsize),
        source: "free space of the file system",
    };
    check(
        what,
        bytes,
        free,
        &format!("disk at {}", directory.display()),
    )
}

fn check(what: &str, bytes: u64, limit: Limit, resource: &str) -> Result<()> {
    if bytes > limit.bytes {
        bail!(
            "{what}: needs about {} of {resource}, over the {} available ({}); ask for less",
            human(bytes),
            human(limit.bytes),
            limit.source
        );
    }
    Ok(())
}

/// The smallest of the limits that apply to this process, if any can be read.
fn memory_limit() -> Option<Limit> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo
        .as_deref()
        .and_then(|text| kib_field(text, "MemAvailable:"))
        .map(|kib| Limit {
            bytes: kib.saturating_mul(1024),
            source: "MemAvailable",
        });
    let cgroup = cgroup_headroom().map(|bytes| Limit {
        bytes,
        source: "the cgroup's memory.max",
    });
    let address_space = address_space_headroom().map(|bytes| Limit {
        bytes,
        source: "the address-space limit, ulimit -v",
    });
    [available, cgroup, address_space]
        .into_iter()
        .flatten()
        .min_by_key(|l| l.bytes)
}

/// A `Name:   12345 kB` line of a /proc file, in KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What the cgroup (v2) still lets this process allocate, when it has a limit.
fn cgroup_headroom() -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(name)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().unwrap_or(0);
    Some(max.saturating_sub(current))
}

/// What `ulimit -v` still lets this process map, when it is set.
fn address_space_headroom() -> Option<u64> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::As).current?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mapped = kib_field(&status, "VmSize:")?.saturating_mul(1024);
    Some(limit.saturating_sub(mapped))
}

/// Bytes in the largest unit that keeps a number ≥ 1 (decimal units, as `df -H`).
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_over_the_limit_is_refused_naming_both_and_the_source() {
        let limit = Limit {
            bytes: 2_000_000_000,
            source: "MemAvailable",
        };
        check("--bits 10", 1_999_999_999, limit, "memory").unwrap();
        let err = check("--bits 10", 13_000_000_000, limit, "memory").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--bits 10: needs about 13.0 GB of memory, over the 2.0 GB available (MemAvailable); ask for less"
        );
    }

    #[test]
    fn proc_fields_read_in_kib() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   1234 kB\n";
        assert_eq!(kib_field(text, "MemAvailable:"), Some(1234));
        assert_eq!(kib_field(text, "VmSize:"), None);
        assert_eq!(human(999), "999 B");
        assert_eq!(human(11_000_000_000_000), "11.0 TB");
    }

    #[test]
    fn this_machine_has_a_memory_limit_and_free_disk() {
        let limit = memory_limit().unwrap();
        assert!(limit.bytes > 0);
        ensure_disk(&std::env::temp_dir().join("x"), "test", 1).unwrap();
        assert!(ensure_disk(&std::env::temp_dir().join("x"), "test", u64::MAX).is_err());
    }
}
