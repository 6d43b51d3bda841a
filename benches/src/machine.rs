//! What the report needs to know about the machine: its load and free memory (Linux
//! `/proc`; `None` elsewhere) and the peak it measures against.

/// Peak fp32 throughput of one core assumed by the report (the figure of the
/// kernels issue): a Zen 4 core has two 256-bit FMA pipes (AVX-512 runs as two
/// halves), `2 pipes × 8 lanes × 2 FLOP × ≈3.65 GHz ≈ 117 GFLOP/s`. "% peak" in the report is
/// achieved GFLOP/s divided by `threads × PEAK_GFLOPS_PER_CORE`.
pub const PEAK_GFLOPS_PER_CORE: f64 = 117.0;

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The load averages as `uptime` prints them, or `"unknown"`.
pub fn load_average_text() -> String {
    match load_average() {
        Some([a, b, c]) => format!("{a:.2}, {b:.2}, {c:.2}"),
        None => "unknown".into(),
    }
}

/// Memory the kernel reports as available for new allocations (`MemAvailable`).
pub fn mem_available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CPU model name, or `"unknown CPU"`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Logical CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
