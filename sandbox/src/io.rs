//! A run's connection to the outside: where its streams go besides the capture, its stdin,
//! and the handle that stops it.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::error::Error;
use crate::spec::Stdin;

/// Where a run's streams go besides the capture, and how to stop it from outside.
#[derive(Default)]
pub struct Io {
    /// Receives stdout as it is written (up to the output limit), e.g. a terminal or a live log.
    pub stdout_sink: Option<Box<dyn Write + Send>>,
    pub stderr_sink: Option<Box<dyn Write + Send>>,
    /// Ends the run with `stopped` when triggered.
    pub stop: Option<StopHandle>,
}

/// A handle that stops a running sandbox (end reason `stopped`). Clone it freely; stopping
/// before the run starts stops it as soon as it starts.
#[derive(Clone)]
pub struct StopHandle {
    event: Arc<OwnedFd>,
}

impl StopHandle {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopHandle {
            event: Arc::new(crate::sys::eventfd()?),
        })
    }

    /// Asks the run to stop.
    pub fn stop(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live value to our eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }

    /// Whether a stop was asked for (without consuming it).
    pub fn requested(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.event.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        crate::sys::poll(&mut fds, Some(std::time::Duration::ZERO)) > 0
    }

    /// The eventfd the supervisor polls.
    pub(crate) fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}

/// The program's stdin as a file descriptor.
pub(crate) fn stdin_fd(stdin: &Stdin) -> Result<OwnedFd, Error> {
    match stdin {
        Stdin::Null => File::open("/dev/null")
            .map(Into::into)
            .map_err(|e| Error::Setup(format!("/dev/null: {e}"))),
        Stdin::File(path) => File::open(path)
            .map(Into::into)
            .map_err(|e| Error::InvalidSpec(format!("stdin file {}: {e}", path.display()))),
        Stdin::Bytes(bytes) => {
            // A memfd: any amount of input, no writer thread, seekable.
            let fd = nix::sys::memfd::memfd_create(
                c"sandpit-stdin",
                nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
            )
            .map_err(|e| Error::Setup(format!("memfd_create: {e}")))?;
            let mut file = File::from(fd);
            file.write_all(bytes)
                .map_err(|e| Error::Setup(format!("writing stdin: {e}")))?;
            file.rewind()
                .map_err(|e| Error::Setup(format!("rewinding stdin: {e}")))?;
            Ok(file.into())
        }
    }
}
