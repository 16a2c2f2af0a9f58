//! Shutdown signals: SIGINT, SIGTERM and SIGHUP on Unix; Ctrl+C, Ctrl+Break and console close on
//! Windows.
//!
//! SIGHUP (the terminal closed, the ssh session dropped) is a stop like SIGTERM: its default action
//! would kill the process without the clean close (code 1000) the hub needs to free the agent.

use std::io;

/// Installed stop-signal handlers. Install them before connecting, so that a signal that arrives
/// early is not handled by the default action (which would skip the clean close).
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(windows)]
    c: tokio::signal::windows::CtrlC,
    #[cfg(windows)]
    brk: tokio::signal::windows::CtrlBreak,
    #[cfg(windows)]
    close: tokio::signal::windows::CtrlClose,
}

impl Signals {
    /// Install the handlers (inside a tokio runtime).
    pub fn install() -> io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows;
            Ok(Signals {
                c: windows::ctrl_c()?,
                brk: windows::ctrl_break()?,
                close: windows::ctrl_close()?,
            })
        }
    }

    /// Resolves with the signal's name once the process is asked to stop.
    pub async fn recv(mut self) -> String {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM".to_owned(),
                _ = self.int.recv() => "SIGINT".to_owned(),
                _ = self.hup.recv() => "SIGHUP".to_owned(),
            }
        }
        #[cfg(windows)]
        {
            tokio::select! {
                _ = self.c.recv() => "Ctrl+C".to_owned(),
                _ = self.brk.recv() => "Ctrl+Break".to_owned(),
                _ = self.close.recv() => "console closed".to_owned(),
            }
        }
    }
}
