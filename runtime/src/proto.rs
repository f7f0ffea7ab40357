//! The socket protocol between the caller and the sandbox init: length-prefixed JSON frames on
//! a `SOCK_STREAM` unix socketpair, file descriptors (the pty master) passed with
//! `SCM_RIGHTS`. The caller's end doubles as a lifeline: when it closes (the caller died), the
//! init kills the sandbox.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StartErrorKind;
use crate::spec::SandboxSpec;
use crate::{Error, Result};

/// Largest frame accepted (a spec with a huge environment still fits).
const MAX_FRAME: usize = 16 << 20;

/// Caller to init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToInit {
    Spec(Box<SandboxSpec>),
    /// SIGKILL the sandbox (everything in its pid namespace).
    Kill,
}

/// Init to caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    /// Mount points created in the rootfs, to remove from the upperdir afterwards.
    Stubs(Vec<String>),
    /// The pty master travels with this frame.
    Pty,
    /// Setup or exec failed; the sandbox is gone.
    Failed {
        kind: StartErrorKind,
        message: String,
    },
    /// The command runs; `pid` is the sandbox's pid 1 as the host sees it. A pidfd on it
    /// travels with this frame.
    Started { pid: i32 },
    /// The sandbox's pid 1 is gone, and with it every process and mount of the sandbox.
    Exited(crate::ExitStatus),
}

/// One end of the socketpair.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Channel {
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// Encodes one frame.
    pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
        let body =
            serde_json::to_vec(msg).map_err(|e| Error::Protocol(format!("encode message: {e}")))?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }

    /// Sends one frame, with `fd` attached when given.
    pub fn send<T: Serialize>(&self, msg: &T, fd: Option<RawFd>) -> Result<()> {
        self.send_frame(&Self::encode(msg)?, fd)
    }

    /// Sends an encoded frame, with `fd` attached when given.
    pub fn send_frame(&self, frame: &[u8], fd: Option<RawFd>) -> Result<()> {
        let mut off = 0;
        let fds = fd.map(|f| [f]);
        while off < frame.len() {
            let iov = [IoSlice::new(&frame[off..])];
            let cmsgs: Vec<ControlMessage<'_>> = match (&fds, off) {
                (Some(f), 0) => vec![ControlMessage::ScmRights(f)],
                _ => Vec::new(),
            };
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => off += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::Protocol(format!("send: {e}"))),
            }
        }
        Ok(())
    }

    /// Receives one frame; `None` at end of stream.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > MAX_FRAME {
                    return Err(Error::Protocol(format!(
                        "frame of {len} bytes is too large"
                    )));
                }
                if self.buf.len() >= 4 + len {
                    let msg = serde_json::from_slice(&self.buf[4..4 + len])
                        .map_err(|e| Error::Protocol(format!("decode message: {e}")))?;
                    self.buf.drain(..4 + len);
                    return Ok(Some(msg));
                }
            }
            if !self.fill()? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::Protocol("stream ended inside a message".into()));
            }
        }
    }

    /// Reads more bytes; false at end of stream.
    fn fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 8192];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        loop {
            let mut iov = [IoSliceMut::new(&mut chunk)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let n = msg.bytes;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                for f in fds {
                                    // SAFETY: the kernel just installed this fd in our
                                    // table; nothing else owns it.
                                    self.fds.push_back(unsafe { OwnedFd::from_raw_fd(f) });
                                }
                            }
                        }
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n > 0);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET) => return Ok(false),
                Err(e) => return Err(Error::Protocol(format!("receive: {e}"))),
            }
        }
    }

    /// The next fd that arrived with a frame.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn frames_and_fds_round_trip() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let a = Channel::new(a);
        let mut b = Channel::new(b);
        let (r, _w) = nix::unistd::pipe().unwrap();
        a.send(&FromInit::Pty, Some(r.as_raw_fd())).unwrap();
        a.send(&FromInit::Started { pid: 42 }, None).unwrap();
        let big = FromInit::Stubs(vec!["x".repeat(100_000)]);
        a.send(&big, None).unwrap();
        drop(a);
        assert!(matches!(b.recv().unwrap(), Some(FromInit::Pty)));
        assert!(b.take_fd().is_some());
        assert!(matches!(
            b.recv().unwrap(),
            Some(FromInit::Started { pid: 42 })
        ));
        match b.recv::<FromInit>().unwrap() {
            Some(FromInit::Stubs(s)) => assert_eq!(s[0].len(), 100_000),
            other => panic!("{other:?}"),
        }
        assert!(b.recv::<FromInit>().unwrap().is_none());
    }
}
