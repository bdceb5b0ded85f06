//! Sockets: the stream and listener types of `vhdkit serve` (a Unix domain socket where
//! the system has them, TCP everywhere), waiting for a connection, and sending file
//! data (Linux `sendfile`, a read and a write elsewhere).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::sys;

#[cfg(unix)]
pub use std::os::unix::net::{UnixListener, UnixStream};
#[cfg(windows)]
pub use sys::{UnixListener, UnixStream};

/// Whether this system has Unix domain sockets (`serve`'s default transport; TCP with
/// `--listen` otherwise).
pub const HAS_UNIX_SOCKETS: bool = cfg!(unix);

/// A connected client: a Unix or TCP stream.
#[derive(Debug)]
pub enum Stream {
    /// A Unix domain socket.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream::Unix(s)
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Tcp(s)
    }
}

impl Stream {
    /// A second handle on the same connection.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Shuts the connection down (errors ignored: it may be gone already).
    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }

    /// Sets the read timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    /// Sets the write timeout.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    /// Whether this is a TCP connection.
    pub fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    /// Asks for a send buffer of `bytes` (best effort: the system caps it).
    pub fn set_send_buffer(&self, bytes: usize) {
        sys::set_send_buffer(self, bytes)
    }

    /// Writes some of `buf`; `more`: more of the same reply follows at once (Linux TCP
    /// holds the bytes back to fill segments, `MSG_MORE`).
    pub fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        if more && self.is_tcp() {
            if let Some(r) = sys::send_more(self, buf) {
                return r;
            }
        }
        self.write(buf)
    }

    /// Sends `len` bytes of `file` at `offset` (Linux `sendfile`; elsewhere read and
    /// written through a buffer). A file shorter than that is an error.
    pub fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        match sys::send_file(self, file, offset, len) {
            Some(r) => r,
            None => copy_file(self, file, offset, len),
        }
    }
}

/// `send_file` through a buffer.
fn copy_file(out: &mut Stream, file: &File, offset: u64, len: u64) -> io::Result<()> {
    use super::FileExt;
    let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image file ended before the data",
                ),
                _ => e,
            })?;
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket: Unix or TCP.
#[derive(Debug)]
pub enum Listener {
    /// A Unix domain socket.
    Unix(UnixListener),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Listener {
        Listener::Unix(l)
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

impl Listener {
    /// Accepts one connection (TCP without Nagle's delay, as the NBD protocol asks).
    pub fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => {
                let s = l.accept()?.0;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        })
    }

    /// Waits up to `timeout` for a connection to accept (`poll`, `WSAPoll`); false
    /// after the timeout or an interruption.
    pub fn ready(&self, timeout: Duration) -> io::Result<bool> {
        sys::wait_readable(self, timeout)
    }
}

/// Creates a directory only this user can enter (mode 0700; on Windows the user's
/// temporary folder is private already).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    sys::create_private_dir(path)
}
