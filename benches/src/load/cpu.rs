//! CPU time of processes, read from `/proc/<pid>/stat` (Linux only).
//!
//! [`CpuMeter`] samples the server processes and this process at the start and the end
//! of the measured window; [`CpuSample::since`] turns two samples into a [`CpuUsage`].
//! A process's `utime + stime` in `/proc/<pid>/stat` covers all of its threads, counted
//! in clock ticks (`CLK_TCK`, almost always 100 per second, so the resolution is 10 ms:
//! measure windows of seconds, not milliseconds). For windows of milliseconds (the
//! offline drain) [`CpuMeter::fine`] sums each thread's run time from
//! `/proc/<pid>/task/*/schedstat` instead, in nanoseconds; a thread that ends inside the
//! window is not counted, so use it only on processes that keep their threads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// Used when `getconf CLK_TCK` cannot be run: the value on every mainstream Linux.
const CLOCK_TICKS_DEFAULT: u64 = 100;

/// Where a process's CPU time is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This process (`/proc/self/stat`).
    This,
    /// Another process by id.
    Pid(u32),
}

impl Process {
    fn stat_path(self) -> PathBuf {
        match self {
            Process::This => PathBuf::from("/proc/self/stat"),
            Process::Pid(pid) => PathBuf::from(format!("/proc/{pid}/stat")),
        }
    }
}

/// `utime + stime` (in clock ticks) from the text of a `/proc/<pid>/stat` file.
///
/// The second field, the command name, is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // After the name: state (field 3) … utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The run time of one thread, in nanoseconds, from the text of its `schedstat` file
/// (the first of its three fields).
pub fn schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_ascii_whitespace().next()?.parse().ok()
}

/// Reads CPU time of processes.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    ticks_per_second: u64,
    servers: Vec<Process>,
    /// Per-thread run times in nanoseconds instead of the process's clock ticks.
    fine: bool,
}

impl CpuMeter {
    /// A meter for `servers` (and always this process). Asks `getconf CLK_TCK` once for
    /// the tick length (the crate forbids `unsafe`, so no `sysconf` call).
    pub fn new(servers: Vec<Process>) -> Self {
        let ticks_per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(CLOCK_TICKS_DEFAULT);
        Self {
            ticks_per_second,
            servers,
            fine: false,
        }
    }

    /// A meter for `servers` (and this process) that sums each live thread's run time in
    /// nanoseconds (see the module docs): for windows of milliseconds.
    pub fn fine(servers: Vec<Process>) -> Self {
        Self {
            fine: true,
            ..Self::new(servers)
        }
    }

    /// The processes measured as "server".
    pub fn servers(&self) -> &[Process] {
        &self.servers
    }

    /// CPU time `process` has used since it started (with [`CpuMeter::fine`], by its
    /// threads alive now).
    pub fn cpu_time(&self, process: Process) -> Result<Duration> {
        if self.fine {
            return thread_cpu_time(process);
        }
        let path = process.stat_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let ticks = stat_ticks(&text).ok_or_else(|| anyhow!("cannot parse {}", path.display()))?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second as f64,
        ))
    }

    /// A sample of every server process and of this one.
    pub fn sample(&self) -> Result<CpuSample> {
        let servers = self
            .servers
            .iter()
            .map(|&p| self.cpu_time(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuSample {
            at: Instant::now(),
            servers,
            this: self.cpu_time(Process::This)?,
        })
    }
}

/// The summed run time of the threads of `process` alive now.
fn thread_cpu_time(process: Process) -> Result<Duration> {
    let dir = match process {
        Process::This => PathBuf::from("/proc/self/task"),
        Process::Pid(pid) => PathBuf::from(format!("/proc/{pid}/task")),
    };
    let mut total_ns = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path().join("schedstat");
        // A thread may end between the listing and the read: it is skipped.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns = schedstat_ns(&text).ok_or_else(|| anyhow!("cannot parse {}", path.display()))?;
        total_ns = total_ns.saturating_add(ns);
    }
    Ok(Duration::from_nanos(total_ns))
}

/// CPU times at one moment.
#[derive(Clone, Debug)]
pub struct CpuSample {
    at: Instant,
    servers: Vec<Duration>,
    this: Duration,
}

impl CpuSample {
    /// The CPU used between `earlier` and this sample.
    pub fn since(&self, earlier: &CpuSample) -> CpuUsage {
        let servers: Vec<Duration> = self
            .servers
            .iter()
            .zip(&earlier.servers)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        CpuUsage {
            wall: self.at.saturating_duration_since(earlier.at),
            server: servers.iter().sum(),
            per_server: servers,
            load_generator: self.this.saturating_sub(earlier.this),
        }
    }
}

/// CPU used over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuUsage {
    /// The window's wall-clock length.
    pub wall: Duration,
    /// CPU time of all server processes together.
    pub server: Duration,
    /// CPU time of each server process, in [`CpuMeter::servers`] order.
    pub per_server: Vec<Duration>,
    /// CPU time of this process (the load generator, and the stack too when it runs
    /// in-process).
    pub load_generator: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_a_command_name_with_spaces_and_parentheses() {
        // A process may call itself anything; counting fields from the first space or the
        // first `)` would read the wrong columns.
        let stat = "4242 (quichat (dev) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 500 18446744073709551615";
        assert_eq!(stat_ticks(stat), Some(325));
    }

    #[test]
    fn a_threads_run_time_is_the_first_schedstat_field() {
        assert_eq!(schedstat_ns("123456789 2345 67\n"), Some(123_456_789));
        assert_eq!(schedstat_ns(""), None);
        assert_eq!(schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn the_fine_meter_sees_this_process_compute_for_a_few_milliseconds() {
        // Nanosecond resolution: a few milliseconds of work must show, and as no more
        // than the wall time it took on this process's threads.
        let meter = CpuMeter::fine(vec![Process::This]);
        let before = meter.sample().unwrap();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(5) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let usage = meter.sample().unwrap().since(&before);
        assert!(!usage.load_generator.is_zero(), "{usage:?}");
        let threads = std::fs::read_dir("/proc/self/task").unwrap().count() as u32;
        assert!(usage.load_generator <= usage.wall * threads, "{usage:?}");
    }

    #[test]
    fn a_truncated_stat_line_is_refused() {
        assert_eq!(stat_ticks("4242 (quichat) S 1 2 3"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_cpu_time_grows_while_it_computes() {
        // The meter must read live numbers, not a constant: burn CPU until the counter
        // moves (by one tick, 10 ms), bounded in time because the machine may be busy.
        let meter = CpuMeter::new(vec![Process::This]);
        let before = meter.sample().unwrap();
        let started = Instant::now();
        let mut x = 0u64;
        let mut usage = meter.sample().unwrap().since(&before);
        while usage.load_generator.is_zero() && started.elapsed() < Duration::from_secs(20) {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            usage = meter.sample().unwrap().since(&before);
        }
        assert!(usage.load_generator > Duration::ZERO, "{usage:?}");
        assert_eq!(usage.per_server.len(), 1);
    }
}
