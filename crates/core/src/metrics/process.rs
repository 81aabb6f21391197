//! The process's own figures — CPU seconds, memory, threads, open files — under the
//! standard `process_*` names, read from `/proc/self` at each scrape (Linux).
//!
//! The prometheus crate's process collector counts CPU in whole seconds, so a 30 s
//! review of a pod using 0.3 cores is off by up to a tenth; capacity reviews divide by
//! this figure, so it is counted here in the kernel's ticks (10 ms).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

/// Collects this process's `process_*` metrics.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    cpu: Counter,
    resident: Gauge,
    resident_peak: Gauge,
    virtual_memory: Gauge,
    threads: Gauge,
    open_fds: Gauge,
    start_time: Gauge,
    descs: Vec<Desc>,
}

/// CPU seconds (user + system) this process has used, to the kernel's tick (`None`
/// off Linux or when /proc cannot be read).
pub fn cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// The memory this process holds resident now, bytes (`VmRSS`).
pub fn resident_bytes() -> Option<u64> {
    let status = procfs::process::Process::myself().ok()?.status().ok()?;
    status.vmrss.map(|kb| kb * 1024)
}

/// The most memory this process has held resident, bytes (`VmHWM`).
pub fn peak_resident_bytes() -> Option<u64> {
    let status = procfs::process::Process::myself().ok()?.status().ok()?;
    status.vmhwm.map(|kb| kb * 1024)
}

impl ProcessCollector {
    /// A collector for this process.
    pub(crate) fn new() -> Self {
        let gauge =
            |name: &str, help: &str| Gauge::with_opts(Opts::new(name, help)).expect("valid metric");
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("valid metric");
        let resident = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let resident_peak = gauge(
            "process_resident_memory_max_bytes",
            "The most resident memory the process has held, in bytes.",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let threads = gauge("process_threads", "Number of OS threads in the process.");
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        );
        let mut c = ProcessCollector {
            cpu,
            resident,
            resident_peak,
            virtual_memory,
            threads,
            open_fds,
            start_time,
            descs: Vec::new(),
        };
        let descs = c
            .gauges()
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .chain(c.cpu.desc().into_iter().cloned())
            .collect();
        c.descs = descs;
        c
    }

    /// Every gauge (the CPU counter apart).
    fn gauges(&self) -> [&Gauge; 6] {
        [
            &self.resident,
            &self.resident_peak,
            &self.virtual_memory,
            &self.threads,
            &self.open_fds,
            &self.start_time,
        ]
    }

    fn refresh(&self) -> Option<()> {
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = (stat.utime + stat.stime) as f64 / ticks;
        // A counter only goes up: add what was used since the last scrape.
        self.cpu.inc_by((cpu - self.cpu.get()).max(0.0));
        if let Ok(status) = me.status() {
            let kb = |v: Option<u64>| v.unwrap_or(0) as f64 * 1024.0;
            self.resident.set(kb(status.vmrss));
            self.resident_peak.set(kb(status.vmhwm));
            self.virtual_memory.set(kb(status.vmsize));
            self.threads.set(status.threads as f64);
        }
        if let Ok(n) = me.fd_count() {
            self.open_fds.set(n as f64);
        }
        if let Ok(boot) = procfs::boot_time_secs() {
            self.start_time
                .set(boot as f64 + stat.starttime as f64 / ticks);
        }
        Some(())
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.gauges()
            .iter()
            .flat_map(|g| g.collect())
            .chain(self.cpu.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_counted_finer_than_whole_seconds() {
        let c = ProcessCollector::new();
        let before = cpu_seconds().unwrap();
        // Burn ~50 ms of CPU.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let families = c.collect();
        let metric = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .unwrap()
                .get_metric()[0]
                .clone()
        };
        let cpu = metric("process_cpu_seconds_total")
            .get_counter()
            .get_value();
        assert!(cpu >= before + 0.02, "{before} → {cpu}");
        let rss = metric("process_resident_memory_bytes")
            .get_gauge()
            .get_value();
        assert!(rss > 1e6, "{rss}");
    }
}
