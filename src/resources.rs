//! Host resources for the hub's `resource_report`: CPU load and RAM, sampled as the Node sidecar does.
//!
//! [`sample`] reads the machine (Linux: `/proc`; macOS: `getloadavg` and `sysctl`; Windows:
//! `GlobalMemoryStatusEx`, no CPU figure). [`ResourceReporter`] is sans-IO like the link policy: it
//! says when the next report is due and builds the frame, given a sampler; the driver in
//! `link/socket.rs` owns the timer and the socket.

use crate::protocol::Outbound;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One reading of the host's resources; `None` where the platform gives no figure.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceSample {
    /// 1-minute load average / CPU count, in percent, capped at 100, one decimal.
    pub cpu_percent: Option<f64>,
    /// RAM in use (total - available), in bytes.
    pub ram_used_bytes: Option<u64>,
    /// RAM installed, in bytes.
    pub ram_total_bytes: Option<u64>,
}

/// Node's figure: `load / cpus x 100`, rounded to one decimal, capped at 100.
pub fn cpu_percent(load_1m: f64, cpus: usize) -> Option<f64> {
    if cpus == 0 || !load_1m.is_finite() || load_1m < 0.0 {
        return None;
    }
    let percent = (load_1m / cpus as f64 * 100.0 * 10.0).round() / 10.0;
    Some(percent.min(100.0))
}

/// The 1-minute load average from the text of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `(used, total)` bytes from the text of `/proc/meminfo`: MemTotal - MemAvailable, MemTotal.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let rest = line[name.len()..]
            .trim_start()
            .strip_prefix(':')
            .unwrap_or(&line[name.len()..]);
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        Some(match parts.next() {
            Some("kB") => value.checked_mul(1024)?,
            _ => value,
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some((total.saturating_sub(available), total))
}

/// The number of online CPUs, as Node's `os.cpus().length` counts them.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn cpu_count() -> usize {
    // SAFETY: sysconf only reads a system setting.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        return n as usize;
    }
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// Read the host's resources now. Never fails: a figure that cannot be read is `None`.
pub fn sample() -> ResourceSample {
    platform::sample()
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;

    pub fn sample() -> ResourceSample {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| parse_loadavg(&t));
        let ram = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t));
        ResourceSample {
            cpu_percent: load.and_then(|l| cpu_percent(l, cpu_count())),
            ram_used_bytes: ram.map(|(used, _)| used),
            ram_total_bytes: ram.map(|(_, total)| total),
        }
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;
    use std::ffi::CStr;

    /// An integer sysctl of 4 or 8 bytes.
    fn sysctl_uint(name: &CStr) -> Option<u64> {
        let mut buf = [0u8; 8];
        let mut len: libc::size_t = buf.len();
        // SAFETY: buf is 8 writable bytes and len says so; the name is NUL-terminated.
        let rc = unsafe {
            libc::sysctlbyname(
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        match (rc, len) {
            (0, 4) => Some(u64::from(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]))),
            (0, 8) => Some(u64::from_ne_bytes(buf)),
            _ => None,
        }
    }

    pub fn sample() -> ResourceSample {
        let mut loads = [0f64; 3];
        // SAFETY: loads holds 3 doubles, as requested.
        let n = unsafe { libc::getloadavg(loads.as_mut_ptr(), 3) };
        let load = (n >= 1).then_some(loads[0]);
        let total = sysctl_uint(c"hw.memsize");
        // What libuv's uv_get_free_memory (Node's os.freemem) counts: vm_statistics64's
        // free_count, which the kernel also publishes as vm.page_free_count.
        // SAFETY: sysconf only reads a system setting.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let free = sysctl_uint(c"vm.page_free_count")
            .zip(u64::try_from(page).ok())
            .and_then(|(pages, size)| pages.checked_mul(size));
        ResourceSample {
            cpu_percent: load.and_then(|l| cpu_percent(l, cpu_count())),
            ram_used_bytes: total.zip(free).map(|(t, f)| t.saturating_sub(f)),
            ram_total_bytes: total,
        }
    }
}

#[cfg(windows)]
mod platform {
    use super::*;

    /// `MEMORYSTATUSEX` from `sysinfoapi.h`.
    #[repr(C)]
    struct MemoryStatusEx {
        length: u32,
        memory_load: u32,
        total_phys: u64,
        avail_phys: u64,
        total_page_file: u64,
        avail_page_file: u64,
        total_virtual: u64,
        avail_virtual: u64,
        avail_extended_virtual: u64,
    }

    #[link(name = "kernel32")]
    extern "system" {
        fn GlobalMemoryStatusEx(buffer: *mut MemoryStatusEx) -> i32;
    }

    pub fn sample() -> ResourceSample {
        let mut status = MemoryStatusEx {
            length: std::mem::size_of::<MemoryStatusEx>() as u32,
            memory_load: 0,
            total_phys: 0,
            avail_phys: 0,
            total_page_file: 0,
            avail_page_file: 0,
            total_virtual: 0,
            avail_virtual: 0,
            avail_extended_virtual: 0,
        };
        // SAFETY: status is a properly sized MEMORYSTATUSEX with its length set.
        let ok = unsafe { GlobalMemoryStatusEx(&mut status) } != 0;
        // Windows has no load average (Node's os.loadavg() is [0, 0, 0] there): null.
        ResourceSample {
            cpu_percent: None,
            ram_used_bytes: ok.then(|| status.total_phys.saturating_sub(status.avail_phys)),
            ram_total_bytes: ok.then_some(status.total_phys),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use super::*;

    pub fn sample() -> ResourceSample {
        ResourceSample::default()
    }
}

/// Reads the host's resources for a [`ResourceReporter`].
pub type Sampler = Box<dyn FnMut() -> ResourceSample + Send>;

/// Schedules `resource_report` frames: the first [`ResourceReporter::FIRST_DELAY`] after the link
/// is identified, then every [`ResourceReporter::INTERVAL`], only while identified; never when
/// disabled. Sans-IO: the caller passes `now` and sends the frames it returns.
pub struct ResourceReporter {
    agent_id: String,
    enabled: bool,
    sampler: Sampler,
    /// When the next report is due; `None` while the link is down (or reporting is off).
    next: Option<Instant>,
    /// The operator's Ollama (`ollama_url`): each report waits for its `/api/ps` VRAM figure.
    ollama_url: Option<String>,
    /// A report waiting for its VRAM figure.
    pending: Option<Pending>,
}

/// A due report whose host figures are read, waiting for Ollama's VRAM figure.
struct Pending {
    sample: ResourceSample,
    timestamp: i64,
    /// `None` until asked for (the URL is handed out once); `Some(answer)` once answered.
    vram: Option<Option<u64>>,
    asked: bool,
    /// Past this the report goes out without the figure (null).
    deadline: Instant,
}

impl ResourceReporter {
    /// From identified to the first report (Node: 5 s after `open`).
    pub const FIRST_DELAY: Duration = Duration::from_secs(5);
    /// Between reports.
    pub const INTERVAL: Duration = Duration::from_secs(30);
    /// The longest a report waits for Ollama's `/api/ps` (whose own timeout is 5 s).
    pub const VRAM_WAIT: Duration = Duration::from_secs(6);

    /// A reporter for `agent_id` that reads the host with `sampler`; `enabled: false` never reports.
    pub fn new(
        agent_id: impl Into<String>,
        enabled: bool,
        sampler: impl FnMut() -> ResourceSample + Send + 'static,
    ) -> ResourceReporter {
        ResourceReporter {
            agent_id: agent_id.into(),
            enabled,
            sampler: Box::new(sampler),
            next: None,
            ollama_url: None,
            pending: None,
        }
    }

    /// Fill `vram_used_bytes` from the Ollama at `ollama_url` (`GET /api/ps`): each due report
    /// waits (at most [`Self::VRAM_WAIT`]) for the figure the caller fetches for it (see
    /// [`Self::take_vram_query`], [`Self::vram_answer`]). `None` keeps VRAM null.
    pub fn with_ollama(mut self, ollama_url: Option<String>) -> ResourceReporter {
        self.ollama_url = ollama_url;
        self
    }

    /// A reporter that reads this machine with [`sample`].
    pub fn system(agent_id: impl Into<String>, enabled: bool) -> ResourceReporter {
        ResourceReporter::new(agent_id, enabled, sample)
    }

    /// The link is identified: the first report is due [`Self::FIRST_DELAY`] from `now`. A second
    /// `on_up` without an `on_down` keeps the current schedule.
    pub fn on_up(&mut self, now: Instant) {
        if self.enabled && self.next.is_none() {
            self.next = Some(now + Self::FIRST_DELAY);
        }
    }

    /// The link is down: no report until the next [`Self::on_up`].
    pub fn on_down(&mut self) {
        self.next = None;
        self.pending = None;
    }

    /// When [`Self::handle_timeout`] next has something to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.pending {
            Some(p) => Some(p.deadline),
            None => self.next,
        }
    }

    /// The Ollama URL to ask for VRAM now, once per waiting report; the caller fetches the figure
    /// without blocking and hands it to [`Self::vram_answer`].
    pub fn take_vram_query(&mut self) -> Option<String> {
        let p = self.pending.as_mut().filter(|p| !p.asked)?;
        p.asked = true;
        self.ollama_url.clone()
    }

    /// The VRAM figure (`None`: Ollama did not answer) for the waiting report; the next
    /// [`Self::handle_timeout`] returns that report. Ignored when no report waits (the link went
    /// down meanwhile).
    pub fn vram_answer(&mut self, used: Option<u64>) {
        if let Some(p) = self.pending.as_mut().filter(|p| p.asked) {
            p.vram = Some(used);
        }
    }

    /// The report due at `now`, if one is; schedules the next one [`Self::INTERVAL`] later. With
    /// an `ollama_url` a due report first waits for its VRAM figure (or [`Self::VRAM_WAIT`]).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Outbound> {
        if let Some(p) = &self.pending {
            if p.vram.is_none() && now < p.deadline {
                return None;
            }
            let p = self.pending.take()?;
            return Some(self.frame(p.sample, p.timestamp, p.vram.flatten()));
        }
        let due = self.next.filter(|due| *due <= now)?;
        // Keep the 30 s rhythm; after a long stall, start again from now rather than catch up.
        let next = due + Self::INTERVAL;
        self.next = Some(if next > now { next } else { now + Self::INTERVAL });
        let sample = (self.sampler)();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if self.ollama_url.is_some() {
            self.pending = Some(Pending {
                sample,
                timestamp,
                vram: None,
                asked: false,
                deadline: now + Self::VRAM_WAIT,
            });
            return None;
        }
        Some(self.frame(sample, timestamp, None))
    }

    fn frame(&self, sample: ResourceSample, timestamp: i64, vram_used: Option<u64>) -> Outbound {
        Outbound::ResourceReport {
            agent_id: self.agent_id.clone(),
            cpu_percent: sample.cpu_percent,
            ram_used_bytes: sample.ram_used_bytes,
            ram_total_bytes: sample.ram_total_bytes,
            vram_used_bytes: vram_used,
            // Ollama's /api/ps gives no total.
            vram_total_bytes: None,
            timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn fixed() -> ResourceSample {
        ResourceSample {
            cpu_percent: Some(12.5),
            ram_used_bytes: Some(1024),
            ram_total_bytes: Some(4096),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn cpu_percent_is_load_per_cpu_one_decimal_capped() {
        assert_eq!(cpu_percent(0.5, 2), Some(25.0));
        assert_eq!(cpu_percent(1.0, 3), Some(33.3));
        assert_eq!(cpu_percent(2.0, 3), Some(66.7));
        assert_eq!(cpu_percent(8.81, 2), Some(100.0));
        assert_eq!(cpu_percent(0.0, 4), Some(0.0));
        assert_eq!(cpu_percent(1.0, 0), None);
        assert_eq!(cpu_percent(f64::NAN, 2), None);
    }

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_loadavg("8.81 5.69 2.76 4/142 6137\n"), Some(8.81));
        assert_eq!(parse_loadavg(""), None);
        let meminfo =
            "MemTotal:       24684084 kB\nMemFree:        23000000 kB\nMemAvailable:   24021388 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some(((24_684_084 - 24_021_388) * 1024, 24_684_084 * 1024))
        );
        // Old kernels without MemAvailable: no figure rather than a wrong one.
        assert_eq!(parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn samples_this_machine() {
        let s = sample();
        let cpu = s.cpu_percent.expect("linux has a load average");
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        let (used, total) = (s.ram_used_bytes.unwrap(), s.ram_total_bytes.unwrap());
        assert!(total > 0 && used <= total, "{used} of {total}");
    }

    #[test]
    fn first_report_five_seconds_after_up_then_every_thirty() {
        let t0 = Instant::now();
        let mut r = ResourceReporter::new("a1", true, fixed);
        assert_eq!(r.poll_timeout(), None, "nothing before identified");
        assert_eq!(r.handle_timeout(t0 + 100 * S), None);
        r.on_up(t0);
        assert_eq!(r.poll_timeout(), Some(t0 + 5 * S));
        assert_eq!(r.handle_timeout(t0 + 4 * S), None, "not due yet");
        let frame = r.handle_timeout(t0 + 5 * S).expect("due at 5 s");
        match frame {
            Outbound::ResourceReport {
                agent_id,
                cpu_percent,
                ram_used_bytes,
                ram_total_bytes,
                vram_used_bytes,
                vram_total_bytes,
                timestamp,
            } => {
                assert_eq!(agent_id, "a1");
                assert_eq!(cpu_percent, Some(12.5));
                assert_eq!((ram_used_bytes, ram_total_bytes), (Some(1024), Some(4096)));
                assert_eq!((vram_used_bytes, vram_total_bytes), (None, None));
                assert!(timestamp > 1_700_000_000_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.poll_timeout(), Some(t0 + 35 * S));
        assert_eq!(r.handle_timeout(t0 + 34 * S), None);
        assert!(r.handle_timeout(t0 + 35 * S).is_some());
        // A late wake-up keeps the rhythm...
        assert!(r.handle_timeout(t0 + 66 * S).is_some());
        assert_eq!(r.poll_timeout(), Some(t0 + 95 * S));
        // ...and a long stall does not fire a burst to catch up.
        assert!(r.handle_timeout(t0 + 500 * S).is_some());
        assert_eq!(r.poll_timeout(), Some(t0 + 530 * S));
        assert_eq!(r.handle_timeout(t0 + 501 * S), None);
    }

    #[test]
    fn only_while_identified() {
        let t0 = Instant::now();
        let mut r = ResourceReporter::new("a1", true, fixed);
        r.on_up(t0);
        assert!(r.handle_timeout(t0 + 5 * S).is_some());
        r.on_down();
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.handle_timeout(t0 + 35 * S), None);
        // Identified again: 5 s from then, not the old rhythm.
        r.on_up(t0 + 40 * S);
        assert_eq!(r.poll_timeout(), Some(t0 + 45 * S));
        // A repeated up does not push the report back.
        r.on_up(t0 + 44 * S);
        assert_eq!(r.poll_timeout(), Some(t0 + 45 * S));
        assert!(r.handle_timeout(t0 + 45 * S).is_some());
    }

    #[test]
    fn disabled_never_reports_nor_samples() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let mut r = ResourceReporter::new("a1", false, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            fixed()
        });
        let t0 = Instant::now();
        r.on_up(t0);
        assert_eq!(r.poll_timeout(), None);
        for s in 0..200 {
            assert_eq!(r.handle_timeout(t0 + s * S), None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn with_ollama_a_report_waits_for_its_vram_figure() {
        let t0 = Instant::now();
        let mut r = ResourceReporter::new("a1", true, fixed).with_ollama(Some("http://o:1".into()));
        assert_eq!(r.take_vram_query(), None, "nothing due yet");
        r.on_up(t0);
        assert_eq!(r.handle_timeout(t0 + 5 * S), None, "waits for the figure");
        assert_eq!(r.take_vram_query().as_deref(), Some("http://o:1"));
        assert_eq!(r.take_vram_query(), None, "asked once");
        assert_eq!(r.poll_timeout(), Some(t0 + 5 * S + ResourceReporter::VRAM_WAIT));
        assert_eq!(r.handle_timeout(t0 + 6 * S), None);
        r.vram_answer(Some(3 << 30));
        match r.handle_timeout(t0 + 6 * S) {
            Some(Outbound::ResourceReport {
                vram_used_bytes,
                vram_total_bytes,
                ram_used_bytes,
                ..
            }) => {
                assert_eq!(vram_used_bytes, Some(3 << 30));
                assert_eq!(vram_total_bytes, None);
                assert_eq!(ram_used_bytes, Some(1024));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.poll_timeout(), Some(t0 + 35 * S), "the 30 s rhythm holds");
        // No answer: the report goes out with null VRAM after VRAM_WAIT.
        assert_eq!(r.handle_timeout(t0 + 35 * S), None);
        assert!(r.take_vram_query().is_some());
        let late = t0 + 35 * S + ResourceReporter::VRAM_WAIT;
        match r.handle_timeout(late) {
            Some(Outbound::ResourceReport { vram_used_bytes, .. }) => assert_eq!(vram_used_bytes, None),
            other => panic!("{other:?}"),
        }
        // The link goes down while a report waits: it is dropped, a late answer ignored.
        assert_eq!(r.handle_timeout(t0 + 65 * S), None);
        assert!(r.take_vram_query().is_some());
        r.on_down();
        r.vram_answer(Some(1));
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.handle_timeout(t0 + 66 * S), None);
    }

    #[test]
    fn samples_once_per_report() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let mut r = ResourceReporter::new("a1", true, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            ResourceSample::default()
        });
        let t0 = Instant::now();
        r.on_up(t0);
        let sent = (0..=65u32)
            .filter(|&s| r.handle_timeout(t0 + s * S).is_some())
            .count();
        assert_eq!(sent, 3, "at 5, 35 and 65 s");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
