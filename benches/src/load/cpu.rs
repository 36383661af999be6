//! CPU time of processes, from the kernel's per-process CPU clocks (Linux).
//!
//! [`CpuMeter`] samples the server processes and this process at the start and the end
//! of the measured window; [`CpuSample::since`] turns two samples into a [`CpuUsage`].
//! Each process is read through its CPU-time clock (`clock_getcpuclockid` +
//! `clock_gettime`): nanoseconds, all of its threads (including those that ended), and
//! current to the moment of the read. The alternatives are worse for windows of
//! milliseconds such as the offline drain: `/proc/<pid>/stat` counts clock ticks (10 ms),
//! and `/proc/<pid>/task/*/schedstat` is only brought up to date when a thread is
//! descheduled or the timer ticks, so a thread busy for the whole of a short window can
//! read as having used nothing (a CI run saw exactly that).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::time::{ClockId, clock_getcpuclockid};
use nix::unistd::Pid;

/// Linux's largest `pid_max` (`PID_MAX_LIMIT` on 64-bit kernels).
const PID_MAX_LIMIT: i32 = 1 << 22;

/// Where a process's CPU time is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This process.
    This,
    /// Another process by id.
    Pid(u32),
}

impl Process {
    /// The CPU time this process has used since it started, all threads together.
    pub fn cpu_time(self) -> Result<Duration> {
        let clock = match self {
            Process::This => ClockId::CLOCK_PROCESS_CPUTIME_ID,
            Process::Pid(pid) => {
                // The clock id packs the process id into 29 bits: a larger one would
                // name another process (or this one). Linux ids stay below 2^22.
                let raw = i32::try_from(pid)
                    .ok()
                    .filter(|&raw| raw > 0 && raw <= PID_MAX_LIMIT)
                    .with_context(|| format!("{pid} is not a process id"))?;
                clock_getcpuclockid(Pid::from_raw(raw))
                    .with_context(|| format!("no CPU clock for process {pid}"))?
            }
        };
        let now = clock
            .now()
            .with_context(|| format!("reading the CPU clock of {self:?}"))?;
        Ok(Duration::from(now))
    }
}

/// Reads CPU time of processes.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    servers: Vec<Process>,
}

impl CpuMeter {
    /// A meter for `servers` (and always this process).
    pub fn new(servers: Vec<Process>) -> Self {
        Self { servers }
    }

    /// The processes measured as "server".
    pub fn servers(&self) -> &[Process] {
        &self.servers
    }

    /// A sample of every server process and of this one.
    pub fn sample(&self) -> Result<CpuSample> {
        let servers = self
            .servers
            .iter()
            .map(|p| p.cpu_time())
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuSample {
            at: Instant::now(),
            servers,
            this: Process::This.cpu_time()?,
        })
    }
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

    /// Spins until this thread has used `cpu` of CPU time (by its own clock).
    fn burn_thread_cpu(cpu: Duration) {
        let mut x = 0u64;
        while ClockId::CLOCK_THREAD_CPUTIME_ID
            .now()
            .map(Duration::from)
            .is_ok_and(|used| used < cpu)
        {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    }

    #[test]
    fn a_few_milliseconds_of_work_show_and_no_more_than_the_wall_time_allows() {
        // Nanosecond resolution and current to the read: a short busy window must show,
        // even when the busy thread is never descheduled inside it.
        let meter = CpuMeter::new(vec![Process::This]);
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
    fn a_thread_that_ended_inside_the_window_is_counted() {
        // Per-thread counters lose a thread that exits; the process clock keeps it.
        let meter = CpuMeter::new(Vec::new());
        let before = meter.sample().unwrap();
        std::thread::spawn(|| burn_thread_cpu(Duration::from_millis(20)))
            .join()
            .unwrap();
        let usage = meter.sample().unwrap().since(&before);
        assert!(
            usage.load_generator >= Duration::from_millis(20),
            "{usage:?}"
        );
    }

    #[test]
    fn another_process_is_read_by_its_id() {
        // The servers are child processes: their clock must move while they compute.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let meter = CpuMeter::new(vec![Process::Pid(child.id())]);
        let before = meter.sample().unwrap();
        let started = Instant::now();
        let mut usage = meter.sample().unwrap().since(&before);
        while usage.server.is_zero() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
            usage = meter.sample().unwrap().since(&before);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!usage.server.is_zero(), "{usage:?}");
        assert_eq!(usage.per_server.len(), 1);
    }

    #[test]
    fn a_process_that_does_not_exist_is_an_error_not_zero() {
        // A free id below the kernel's limit: a child that has been reaped. Then ids the
        // kernel never hands out, which the clock id could not even name.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        for pid in [gone, 1 << 22 | 1, 1 << 30, 0] {
            let meter = CpuMeter::new(vec![Process::Pid(pid)]);
            assert!(meter.sample().is_err(), "{pid}");
        }
    }
}
