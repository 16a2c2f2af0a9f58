//! Best-effort console output. `println!` panics when stdout is a closed pipe or a full disk
//! (`cmd | head -2`, `>/dev/full`, journald restarting): these never do. A failed write to stdout
//! is remembered ([`stdout_failure`]) so a command can say so on exit; a failed write
//! to stderr is dropped (there is nowhere left to say it).

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

static STDOUT_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Write `args` to stdout and flush; the error, if any, is also remembered (the first one).
pub fn out(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    let result = stdout.write_fmt(args).and_then(|()| stdout.flush());
    if let Err(e) = &result {
        let mut failure = STDOUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert_with(|| e.to_string());
    }
    result
}

/// Write `args` to stderr, ignoring any failure.
pub fn err(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// The first error met writing to stdout in this process, if any.
pub fn stdout_failure() -> Option<String> {
    STDOUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `println!` that never panics: see [`event_log::console`](crate::event_log::console).
#[macro_export]
macro_rules! outln {
    () => {{
        let _ = $crate::event_log::console::out(format_args!("\n"));
    }};
    ($($arg:tt)*) => {{
        let _ = $crate::event_log::console::out(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// `print!` that never panics: see [`event_log::console`](crate::event_log::console).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = $crate::event_log::console::out(format_args!($($arg)*));
    }};
}

/// `eprintln!` that never panics: see [`event_log::console`](crate::event_log::console).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::event_log::console::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}
