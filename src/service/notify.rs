//! sd_notify without a dependency: `READY=1`, `STATUS=...`, `WATCHDOG=1` and `STOPPING=1` sent as
//! datagrams to the Unix socket systemd names in `$NOTIFY_SOCKET` (a path, or an abstract socket
//! written with a leading `@`).
//!
//! # When the watchdog is fed
//!
//! `WATCHDOG=1` goes out every `$WATCHDOG_USEC / 2` only while the sidecar is *healthy*, which
//! means both:
//!
//! 1. **The daemon's loop is turning.** The ping is sent from the daemon's own loop
//!    ([`Notifier::tick`] is called on every turn of `crate::daemon::run`, whose select deadline
//!    includes [`Notifier::poll_timeout`]), never from a separate timer task. A wedged loop (a
//!    blocking call, a deadlock, a busy loop that never reaches the select) therefore stops the
//!    pings, and systemd restarts the sidecar after `WatchdogSec`.
//! 2. **The link is where its design says it should be** (the daemon's `link_healthy`, passed to
//!    [`Notifier::tick`] as a plain `bool`): identified, or in
//!    one of the connecting/backoff phases with its own next deadline not overdue. A hub outage
//!    keeps the link in a designed backoff (1, 2, 4 ... 60 s, or a hub cooldown) forever, and that
//!    is healthy: restarting the sidecar would not bring the hub back and would only turn an
//!    outage into a restart loop. A link whose own deadline passed long ago without being acted on
//!    is stuck, and that is not healthy.
//!
//! Everything is best effort: without `$NOTIFY_SOCKET` (not under systemd, or on Windows and
//! macOS) every call is a no-op, and a failed send is ignored (the socket is non-blocking, so a
//! full queue can never stall the loop).

use std::time::{Duration, Instant};

/// Sends sd_notify messages, and pings the watchdog while healthy. See the module docs.
#[derive(Debug)]
pub struct Notifier {
    #[cfg(unix)]
    target: Option<(std::os::unix::net::UnixDatagram, Target)>,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    ready: bool,
    stopping: bool,
    last_status: String,
}

#[cfg(unix)]
#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            #[cfg(unix)]
            target: None,
            watchdog: None,
            next_watchdog: None,
            ready: false,
            stopping: false,
            last_status: String::new(),
        }
    }

    /// Read `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the watchdog is ignored when
    /// `$WATCHDOG_PID` names another process). Disabled when `$NOTIFY_SOCKET` is unset or unusable.
    pub fn from_env() -> Notifier {
        #[cfg(unix)]
        {
            let mut notifier = Notifier::disabled();
            let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
                return notifier;
            };
            notifier.target = open_target(&socket);
            if notifier.target.is_none() {
                return notifier;
            }
            let for_us = std::env::var("WATCHDOG_PID")
                .ok()
                .and_then(|pid| pid.trim().parse::<u32>().ok())
                .is_none_or(|pid| pid == std::process::id());
            let usec = std::env::var("WATCHDOG_USEC")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|usec| *usec > 0);
            if let (true, Some(usec)) = (for_us, usec) {
                notifier.watchdog = Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)));
            }
            notifier
        }
        #[cfg(not(unix))]
        {
            Notifier::disabled()
        }
    }

    /// True when messages go somewhere.
    pub fn is_enabled(&self) -> bool {
        #[cfg(unix)]
        {
            self.target.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// The watchdog ping period (`$WATCHDOG_USEC / 2`), if systemd asked for one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send one raw message (`KEY=VALUE` lines). Best effort.
    pub fn send(&self, message: &str) {
        #[cfg(unix)]
        if let Some((socket, target)) = &self.target {
            let _ = match target {
                Target::Path(path) => socket.send_to(message.as_bytes(), path),
                #[cfg(any(target_os = "linux", target_os = "android"))]
                Target::Abstract(name) => {
                    #[cfg(target_os = "android")]
                    use std::os::android::net::SocketAddrExt;
                    #[cfg(target_os = "linux")]
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name)
                        .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
                }
            };
        }
        #[cfg(not(unix))]
        let _ = message;
    }

    /// `READY=1` with a status line: the config is loaded and the first connect is about to go
    /// out. Starts the watchdog schedule.
    pub fn ready(&mut self, status: &str) {
        if self.ready {
            return;
        }
        self.ready = true;
        self.last_status = one_line(status);
        self.send(&format!("READY=1\nSTATUS={}", self.last_status));
        if let Some(period) = self.watchdog {
            self.send("WATCHDOG=1");
            self.next_watchdog = Some(Instant::now() + period);
        }
    }

    /// `STATUS=...`, sent only when it changed.
    pub fn status(&mut self, status: &str) {
        let status = one_line(status);
        if status != self.last_status {
            self.send(&format!("STATUS={status}"));
            self.last_status = status;
        }
    }

    /// `STOPPING=1` (once); the watchdog stops with it.
    pub fn stopping(&mut self, status: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.next_watchdog = None;
        self.last_status = one_line(status);
        self.send(&format!("STOPPING=1\nSTATUS={}", self.last_status));
    }

    /// When [`Notifier::tick`] next has a ping to send, if the watchdog is on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_watchdog
    }

    /// Called on every turn of the daemon's loop: sends `WATCHDOG=1` when one is due and the
    /// sidecar is `healthy`. An unhealthy turn sends nothing (the ping stays due), so systemd
    /// restarts the sidecar once `WatchdogSec` passes without a healthy turn.
    pub fn tick(&mut self, now: Instant, healthy: bool) {
        let (Some(period), Some(due)) = (self.watchdog, self.next_watchdog) else {
            return;
        };
        if now >= due && healthy {
            self.send("WATCHDOG=1");
            self.next_watchdog = Some(now + period);
        }
    }
}

fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(unix)]
fn open_target(socket: &std::ffi::OsStr) -> Option<(std::os::unix::net::UnixDatagram, Target)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let target = if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            Target::Abstract(name.to_vec())
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return None;
        }
    } else if bytes.starts_with(b"/") {
        Target::Path(std::path::PathBuf::from(socket))
    } else {
        return None;
    };
    let sock = std::os::unix::net::UnixDatagram::unbound().ok()?;
    sock.set_nonblocking(true).ok()?;
    Some((sock, target))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A datagram socket bound in a fresh temp folder (removed when the folder is dropped).
    fn bound(label: &str) -> (UnixDatagram, std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix(&format!("agentcom-notify-{label}-"))
            .tempdir()
            .unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (sock, path, dir)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 1024];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn notifier_for(path: &std::path::Path, watchdog: Option<Duration>) -> Notifier {
        let mut n = Notifier::disabled();
        n.target = open_target(path.as_os_str());
        n.watchdog = watchdog;
        n
    }

    #[test]
    fn ready_status_watchdog_stopping_in_order() {
        let (sock, path, _dir) = bound("order");
        let mut n = notifier_for(&path, Some(Duration::from_millis(100)));
        assert!(n.is_enabled());
        n.ready("connecting");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=connecting");
        assert_eq!(recv(&sock), "WATCHDOG=1");
        let due = n.poll_timeout().unwrap();
        n.tick(due - Duration::from_millis(1), true);
        n.tick(due, false); // unhealthy: nothing, the ping stays due
        assert_eq!(n.poll_timeout(), Some(due));
        n.status("connecting"); // unchanged: not sent
        n.status("identified\nas x");
        assert_eq!(recv(&sock), "STATUS=identified as x");
        n.tick(due, true);
        assert_eq!(recv(&sock), "WATCHDOG=1");
        n.stopping("stopping (SIGTERM)");
        n.stopping("again");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=stopping (SIGTERM)");
        assert_eq!(n.poll_timeout(), None);
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(sock.recv(&mut buf).is_err(), "nothing more was sent");
        let _ = std::fs::remove_file(path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("agentcom-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut n = Notifier::disabled();
        n.target = open_target(std::ffi::OsStr::new(&format!("@{name}")));
        n.ready("up");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=up");
    }

    #[test]
    fn relative_or_empty_socket_is_disabled() {
        assert!(open_target(std::ffi::OsStr::new("relative/sock")).is_none());
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.send("READY=1"); // a no-op, not a panic
    }
}
