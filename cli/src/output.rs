//! Standard output that may be a closed pipe, and error rendering.
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a socket whose peer left
//! returns `EPIPE` instead of killing the process: the registry client and the sandbox rely on
//! that, and it stays so. A write to a standard output nobody reads any more (`lade inspect X |
//! head -1`) then returns `EPIPE` too. Commands print with [`outln!`], which turns that into
//! [`StdoutClosed`]; `main` then exits quietly with status 141, what a shell reports for a
//! process killed by SIGPIPE (`docker`, `cat`, `grep` all end so). Not 0 as ripgrep does: the
//! output was cut short, and `lade save IMAGE | ...` whose reader died must not look like a
//! success to a script running with `set -o pipefail`.
//!
//! A `println!` left somewhere (or added by a new command) panics on `EPIPE` instead; `main`
//! catches that panic after the stack has unwound (so temp files are removed by their guards)
//! and ends the same way, and [`quiet_broken_pipe_panics`] keeps its message off the terminal.

use std::fmt;
use std::io::{self, Write};

/// Exit status of a process killed by SIGPIPE, as shells report it (128 + 13).
pub const SIGPIPE_STATUS: u8 = 141;

/// Standard output is a pipe whose reader has gone.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The error for a failed write to standard output: [`StdoutClosed`] for `EPIPE`.
pub fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Writes one line to standard output (see [`outln!`]).
pub fn write_line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(stdout_error)
}

/// `println!` that returns an error (a [`StdoutClosed`] one for a closed pipe) instead of
/// panicking: `outln!("{x}")?;`.
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Whether `err` says standard output was closed.
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<StdoutClosed>())
}

/// Whether an `io::Error` somewhere in `err` is `EPIPE`. Only for errors of code that writes
/// nothing but standard output (e.g. `lade save` to stdout): a socket's `EPIPE` is a real error.
pub fn has_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<lade_cache::Error>().is_some_and(|e| {
                matches!(e, lade_cache::Error::Io { source, .. }
                    if source.kind() == io::ErrorKind::BrokenPipe)
            })
    })
}

/// Whether `err` says a filesystem is full (or a quota used up).
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<lade_cache::Error>()
            .is_some_and(lade_cache::Error::is_disk_full)
            || c.downcast_ref::<io::Error>()
                .is_some_and(|e| lade_cache::error::disk_full_errno(e).is_some())
    })
}

/// The panic `println!`/`print!` raise when standard output is a closed pipe.
pub fn is_broken_pipe_panic(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    msg.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe"))
}

/// Installs a panic hook that prints nothing for [`is_broken_pipe_panic`] panics and defers to
/// the previous hook for every other one.
pub fn quiet_broken_pipe_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe_panic(info.payload()) {
            previous(info);
        }
    }));
}

/// `error: ...` text for `err`: each cause once. Library errors often show their source in
/// their own message too; a cause whose text is already there is not repeated.
pub fn render_error(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = io::Error::from_raw_os_error(20);
        let e = anyhow::Error::new(lade_cache::Error::Io {
            what: "create",
            path: "/x".into(),
            source: io,
        })
        .context("cannot open the store at /x");
        let text = render_error(&e);
        assert_eq!(text.matches("Not a directory").count(), 1, "{text}");
        assert!(text.starts_with("cannot open the store at /x: create /x: "));
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render_error(&e), "outer: inner");
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = stdout_error(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_stdout_closed(&e));
        let e = stdout_error(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_stdout_closed(&e));
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from(
            "failed printing to stdout: Broken pipe (os error 32)",
        ));
        assert!(is_broken_pipe_panic(&*p));
        let p: Box<dyn std::any::Any + Send> = Box::new("other");
        assert!(!is_broken_pipe_panic(&*p));
        let e = anyhow::Error::new(lade_cache::Error::Io {
            what: "write archive",
            path: "output".into(),
            source: io::Error::from_raw_os_error(32),
        });
        assert!(has_broken_pipe(&e));
        let e = anyhow::Error::new(lade_cache::Error::DiskFull {
            what: "write".into(),
            path: "/x".into(),
            quota: false,
        });
        assert!(is_disk_full(&e) && !has_broken_pipe(&e));
    }
}
