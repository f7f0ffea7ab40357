//! Helpers for the caller's side of a sandbox pty: resize it and copy bytes between it and the
//! caller's terminal. Raw mode and SIGWINCH handling belong to the terminal owner (the cli).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::spec::ConsoleSize;

/// Sets the window size of a pty (master or slave).
pub fn set_size(fd: &impl AsFd, size: ConsoleSize) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize struct we pass.
    Errno::result(unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// The window size of a terminal, if `fd` is one.
pub fn get_size(fd: &impl AsFd) -> Option<ConsoleSize> {
    // SAFETY: winsize is plain old data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some(ConsoleSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies `input` to the pty master and the master to `output` until the sandbox side closes
/// (every slave fd gone: the command exited). End of `input` stops forwarding input only.
pub fn relay(master: BorrowedFd<'_>, input: BorrowedFd<'_>, output: BorrowedFd<'_>) {
    let mut buf = [0u8; 16384];
    let mut input_open = true;
    loop {
        let mut fds = vec![PollFd::new(master, PollFlags::POLLIN)];
        if input_open {
            fds.push(PollFd::new(input, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        let m = fds[0].revents().unwrap_or(PollFlags::empty());
        let i = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        drop(fds);
        if m.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(master, &mut buf) {
                Ok(0) | Err(Errno::EIO) => return,
                Ok(n) => {
                    if write_all(output, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => return,
            }
        }
        if input_open && i.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(input, &mut buf) {
                Ok(0) => input_open = false,
                Ok(n) => {
                    if write_all(master, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => input_open = false,
            }
        }
    }
}
