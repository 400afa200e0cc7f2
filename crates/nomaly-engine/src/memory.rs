//! The memory budget: by default 80% of the memory this process may use — the cgroup limit when one
//! is set (containers, CI), else the machine's RAM — so a job never pushes the host into swap or the
//! OOM killer. Operators reserve through DataFusion's memory pool and spill to disk past it.

use crate::error::{EngineError, Result};

/// Default share of available memory for the pool.
pub const DEFAULT_BUDGET_FRACTION: f64 = 0.8;

/// Bytes of memory available to this process (cgroup v2/v1 limit, else MemTotal).
pub fn available_memory() -> u64 {
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .filter_map(|s| s.trim().parse::<u64>().ok())
    .filter(|v| *v > 0 && *v < (1u64 << 60))
    .min();
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30);
    cgroup.map_or(total, |c| c.min(total))
}

/// The default budget: 80% of available memory.
pub fn default_budget() -> usize {
    (available_memory() as f64 * DEFAULT_BUDGET_FRACTION) as usize
}

/// Parses sizes like `512MB`, `2GiB`, `1.5G`, `1048576` (binary multiples: 1 MB = 1 MiB).
pub fn parse_byte_size(text: &str) -> Result<usize> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let invalid = |reason: &str| EngineError::InvalidSize {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let n: f64 = num.parse().map_err(|_| invalid("not a number"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        _ => return Err(invalid("unknown unit (use B, KB, MB, GB or TB)")),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 1024.0 * 1024.0 {
        return Err(invalid("must be at least 1MB"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_byte_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_byte_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_byte_size("1.5g").unwrap(), 3 << 29);
        assert!(parse_byte_size("12XB").is_err());
        assert!(parse_byte_size("10").is_err());
        assert!(default_budget() > 0);
    }
}
