//! `vhdkit serve`: the disk over NBD until SIGINT or SIGTERM.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Serialize;
use vhdkit_format::{CreateOptions, Disk, OpenOptions};
use vhdkit_platform::net::{UnixListener, UnixStream};
use vhdkit_serve::{DiskExport, Listener, Server, ServerOptions, Stats};

use super::terminal::{eline, line};
use super::{json, CliError, OpenArgs, SourceArgs, EXIT_OK};

/// Exit code when a second SIGINT cuts the stop short.
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The disk: a VHD of any type (a differencing chain is resolved) or a raw image.
    path: PathBuf,
    /// Listen on this Unix socket (the default on Unix: a new private directory under
    /// $XDG_RUNTIME_DIR or the temporary directory; Windows has no Unix sockets here).
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    socket: Option<PathBuf>,
    /// Listen on TCP at ADDR:PORT (a bare PORT or :PORT means 127.0.0.1; ADDR is an IP
    /// address or a host name). The default on Windows: 127.0.0.1 on a port the system
    /// picks, announced in the start line. NBD has no authentication: anyone who can
    /// connect can read and write the disk.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Refuse writes.
    #[arg(long)]
    read_only: bool,
    /// Create a differencing disk UNDO.vhd over PATH and serve it read-write, so that
    /// PATH and its chain are never written (`vhdkit merge UNDO.vhd` commits the
    /// changes; deleting UNDO.vhd discards them).
    #[arg(long, value_name = "UNDO.vhd", conflicts_with_all = ["read_only", "with_parent"])]
    undo: Option<PathBuf>,
    /// The export's name (clients may also ask for the default, empty name).
    #[arg(long, value_name = "NAME", default_value = "")]
    export_name: String,
    /// A description of the export that clients may show (`nbdinfo`, `NBD_OPT_LIST`);
    /// none by default, so that clients are not told the disk's path.
    #[arg(long, value_name = "TEXT", value_parser = parse_description)]
    description: Option<String>,
    /// Connections served at once; more wait (queued by the kernel's listen backlog)
    /// until one ends.
    #[arg(long, value_name = "N", default_value_t = vhdkit_serve::MAX_CONNECTIONS,
          value_parser = parse_max_connections)]
    max_connections: usize,
    /// Print the start line and the summary as JSON.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    open: OpenArgs,
    #[command(flatten)]
    source: SourceArgs,
}

/// The start line of `serve --json` (docs/json.md).
#[derive(Debug, Serialize)]
struct StartDoc<'a> {
    uri: &'a str,
    size: u64,
    mode: &'a str,
    export_name: &'a str,
    path: &'a Path,
    /// The Unix socket listened on.
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<&'a Path>,
    /// The TCP address listened on.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// The differencing disk the changes go to (`--undo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    undo: Option<&'a Path>,
}

/// The summary line of `serve --json` once the server stopped (docs/json.md).
#[derive(Debug, Serialize)]
struct StopDoc<'a> {
    stopped: bool,
    mode: &'a str,
    connections: u64,
    requests: u64,
    bytes_read: u64,
    bytes_written: u64,
    bytes_zeroed: u64,
    bytes_trimmed: u64,
    errors: u64,
}

/// Where the server listens, and what to clean up afterwards.
enum Place {
    Unix {
        path: PathBuf,
        /// A private directory made for the socket, removed at the end.
        dir: Option<PathBuf>,
    },
    Tcp(SocketAddr),
}

pub fn run(a: ServeArgs) -> Result<u8, CliError> {
    // From here a signal never takes its default action (an exit that would leave the
    // socket and a new undo disk behind): one that comes before the server is up is
    // recorded and stops it as soon as it is (below).
    super::signals::on_signal(|_, _| {});
    // Listen first: an address in use or a bad socket path fails before anything is
    // made (an undo disk in particular).
    let (listener, place) = bind(&a)?;
    let (disk, mode) = match open(&a) {
        Ok(v) => v,
        Err(e) => {
            cleanup(&place);
            return Err(e);
        }
    };
    // Until the server is up and announced, a failure removes the undo disk just made
    // (dropped after the disk, which holds it open).
    let mut undo_guard = UndoGuard(a.undo.clone());
    for w in disk.warnings() {
        eline(format!("vhdkit: warning: {}", one_warning(&w)));
    }
    let size = disk.virtual_size();
    let options = ServerOptions {
        export_name: a.export_name.clone(),
        description: a.description.clone().unwrap_or_default(),
        max_connections: a.max_connections,
        ..ServerOptions::default()
    };
    let server = match Server::new(Arc::new(DiskExport::new(disk)), options) {
        Ok(s) => s,
        Err(e) => {
            cleanup(&place);
            return Err(CliError::io("starting the server", e));
        }
    };

    // SIGINT, SIGTERM, SIGHUP (taken by the signal thread `main` started): the first
    // stops the server cleanly. A second SIGINT — a person at the terminal pressing
    // Ctrl-C again — stops waiting for clients (the image stays valid: every write went
    // through the crash-safe write path). A second SIGTERM or SIGHUP changes nothing:
    // `timeout N vhdkit serve` sends SIGTERM twice (to the server and to its group),
    // and the stop it asked for is already under way.
    let stopper = server.stopper();
    super::signals::on_signal(move |sig, count| {
        if count == 1 {
            stopper.stop();
        } else if sig == super::signals::Signal::Interrupt {
            eline("vhdkit: interrupted again; exiting without waiting");
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    if super::signals::received().is_some() {
        server.stopper().stop();
    }

    let uri = uri(&place, &a.export_name);
    let start = if a.json {
        json::to_string(
            &json::Doc::new(StartDoc {
                uri: &uri,
                size,
                mode,
                export_name: &a.export_name,
                path: &a.path,
                socket: match &place {
                    Place::Unix { path, .. } => Some(path),
                    Place::Tcp(_) => None,
                },
                address: match &place {
                    Place::Tcp(addr) => Some(addr.to_string()),
                    Place::Unix { .. } => None,
                },
                undo: a.undo.as_deref(),
            }),
            false,
        )
    } else {
        Ok(uri.clone())
    };
    let announced = start.and_then(|start| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{start}")
            .and_then(|_| out.flush())
            .map_err(|e| CliError::io("writing to stdout", e))
    });
    if let Err(e) = announced {
        server.stopper().stop();
        let _ = server.finish();
        cleanup(&place);
        return Err(e);
    }
    undo_guard.0 = None;
    if let Place::Tcp(addr) = &place {
        let scope = if addr.ip().is_loopback() {
            "this machine"
        } else {
            "the network"
        };
        eline(format!(
            "vhdkit: warning: NBD has no authentication or encryption: anyone on {scope} who can connect to {addr} can read{} this disk",
            if mode == "read-only" { "" } else { " and write" }
        ));
    }
    eline(format!(
        "vhdkit: serving {} ({size} bytes, {mode}); SIGINT or SIGTERM stops",
        a.path.display()
    ));

    let served = server.serve(listener);
    let finished = server.finish();
    cleanup(&place);
    served.map_err(|e| CliError::io("accepting connections", e))?;
    let stats = finished.map_err(|e| CliError::Other(format!("final flush: {e}")))?;
    summary(&a, mode, &stats)?;
    Ok(EXIT_OK)
}

/// `--description`: at most the 4096 bytes the protocol allows a string.
fn parse_description(s: &str) -> Result<String, String> {
    if s.len() > vhdkit_serve::MAX_STRING {
        return Err(format!(
            "{} bytes; NBD allows at most {}",
            s.len(),
            vhdkit_serve::MAX_STRING
        ));
    }
    Ok(s.to_owned())
}

/// `--max-connections`: at least one.
fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a number of connections, at least 1".into()),
    }
}

/// Removes an undo disk this run made, unless disarmed (set to `None`) once served.
struct UndoGuard(Option<PathBuf>);

impl Drop for UndoGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Made a moment ago by this command and never served.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A warning of the chain as `serve` prints it after `vhdkit: warning: `: a level's own
/// warning comes as `PATH: warning: WHAT`, and says "warning" once.
fn one_warning(w: &str) -> String {
    match w.split_once(": warning: ") {
        Some((path, what)) => format!("{path}: {what}"),
        None => w.strip_prefix("warning: ").unwrap_or(w).to_owned(),
    }
}

/// Opens the disk to serve; returns it with the mode's name.
fn open(a: &ServeArgs) -> Result<(Disk, &'static str), CliError> {
    let base = a.source.apply(a.open.options_for(&a.path)?);
    match &a.undo {
        Some(undo) => {
            Disk::create(undo, &CreateOptions::differencing(&a.path))?;
            let opts = OpenOptions {
                writable: true,
                parent: Some(a.path.clone()),
                ..base
            };
            match Disk::open_with(undo, &opts) {
                Ok(d) => Ok((d, "undo")),
                Err(e) => {
                    // Made a moment ago by this command and never served.
                    let _ = std::fs::remove_file(undo);
                    Err(e.into())
                }
            }
        }
        None => {
            let opts = OpenOptions {
                writable: !a.read_only,
                ..base
            };
            let disk = Disk::open_any(&a.path, &opts)?;
            Ok((
                disk,
                if a.read_only {
                    "read-only"
                } else {
                    "read-write"
                },
            ))
        }
    }
}

/// Where `serve` listens without `--listen` or `--socket`: on Windows, which has no
/// Unix sockets here, TCP on 127.0.0.1 at a port the system picks (announced in the
/// start line, as the Unix default's new socket path is); elsewhere nothing (a Unix
/// socket in a new private directory).
fn default_tcp(a: &ServeArgs) -> Option<SocketAddr> {
    let unix_sockets = !cfg!(windows);
    (a.socket.is_none() && !unix_sockets).then_some(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn bind(a: &ServeArgs) -> Result<(Listener, Place), CliError> {
    if let Some(addr) = a.listen.or_else(|| default_tcp(a)) {
        let l =
            TcpListener::bind(addr).map_err(|e| CliError::io(format!("listening on {addr}"), e))?;
        let addr = l.local_addr().unwrap_or(addr);
        return Ok((Listener::Tcp(l), Place::Tcp(addr)));
    }
    let (path, dir) = match &a.socket {
        Some(p) => {
            clear_stale_socket(p)?;
            (p.clone(), None)
        }
        None => {
            let dir = private_dir()?;
            (dir.join(socket_name(&a.path)), Some(dir))
        }
    };
    match UnixListener::bind(&path) {
        Ok(l) => Ok((Listener::Unix(l), Place::Unix { path, dir })),
        Err(e) => {
            if let Some(d) = &dir {
                let _ = std::fs::remove_dir(d);
            }
            Err(CliError::io(format!("listening on {}", path.display()), e))
        }
    }
}

/// `--listen`: `IPV4:PORT`, `[IPV6]:PORT`, `HOST:PORT`, `:PORT` or `PORT` (the last two
/// on 127.0.0.1). A host made only of numbers that is not a whole IPv4 address (`1`,
/// `127.1`, `0x7f000001`) is refused: the resolver would read it as an address in the
/// old shorthand (`1` as 0.0.0.1), which is never what was meant.
fn parse_listen(spec: &str) -> Result<SocketAddr, String> {
    let port_only = spec.strip_prefix(':').unwrap_or(spec);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or("expected ADDR:PORT, :PORT or PORT")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.starts_with('[') || !host.split('.').all(label_ok) {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    let numeric = |l: &str| {
        l.bytes().all(|b| b.is_ascii_digit())
            || l.strip_prefix("0x")
                .or_else(|| l.strip_prefix("0X"))
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if host.split('.').all(numeric) {
        return Err(format!(
            "{host:?} is not an IPv4 address (write all four parts, e.g. 127.0.0.1)"
        ));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host:?} does not resolve: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Removes a socket file no server listens on any more; refuses anything else.
fn clear_stale_socket(p: &Path) -> Result<(), CliError> {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return Ok(());
    };
    if vhdkit_platform::kind(&meta) != vhdkit_platform::FileKind::Socket {
        return Err(CliError::Other(format!(
            "{} exists and is not a socket",
            p.display()
        )));
    }
    if UnixStream::connect(p).is_ok() {
        return Err(CliError::Other(format!(
            "{}: a server is already listening there",
            p.display()
        )));
    }
    std::fs::remove_file(p).map_err(|e| CliError::io(format!("removing {}", p.display()), e))
}

/// A new directory only this user can enter, for the default socket.
fn private_dir() -> Result<PathBuf, CliError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let pid = std::process::id();
    for n in 0..1000 {
        let d = base.join(format!("vhdkit-serve-{pid}-{n}"));
        match vhdkit_platform::net::create_private_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(CliError::io(format!("creating {}", d.display()), e)),
        }
    }
    Err(CliError::Other(format!(
        "no free directory name for the socket under {}",
        base.display()
    )))
}

/// `<image stem>.sock`, in safe characters, short enough for a socket address.
fn socket_name(image: &Path) -> String {
    let stem: String = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if stem.is_empty() {
        "disk.sock".into()
    } else {
        format!("{stem}.sock")
    }
}

/// The NBD URI of the export (RFC 3986 percent-encoding of the name and socket path).
fn uri(place: &Place, name: &str) -> String {
    match place {
        Place::Unix { path, .. } => format!(
            "nbd+unix:///{}?socket={}",
            encode(name, false),
            encode(&path.to_string_lossy(), true)
        ),
        Place::Tcp(addr) => format!("nbd://{addr}/{}", encode(name, false)),
    }
}

fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn cleanup(place: &Place) {
    if let Place::Unix { path, dir } = place {
        let _ = std::fs::remove_file(path);
        if let Some(d) = dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn summary(a: &ServeArgs, mode: &str, s: &Stats) -> Result<(), CliError> {
    let line_text = if a.json {
        json::to_string(
            &json::Doc::new(StopDoc {
                stopped: true,
                mode,
                connections: s.connections,
                requests: s.requests,
                bytes_read: s.bytes_read,
                bytes_written: s.bytes_written,
                bytes_zeroed: s.bytes_zeroed,
                bytes_trimmed: s.bytes_trimmed,
                errors: s.errors,
            }),
            false,
        )?
    } else {
        format!(
            "stopped: {} connections, {} requests, {} bytes read, {} bytes written, {} zeroed, {} trimmed, {} errors",
            s.connections,
            s.requests,
            s.bytes_read,
            s.bytes_written,
            s.bytes_zeroed,
            s.bytes_trimmed,
            s.errors
        )
    };
    line(line_text)?;
    if let Some(u) = &a.undo {
        eline(format!(
            "vhdkit: the changes are in {u}: `vhdkit merge {u}` commits them into {p}; deleting {u} discards them",
            u = u.display(),
            p = a.path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_ports_addresses_and_host_names() {
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse_listen("10809"), Ok(local(10809)));
        assert_eq!(parse_listen(":10809"), Ok(local(10809)));
        assert_eq!(
            parse_listen("0.0.0.0:7"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 7)))
        );
        assert_eq!(
            parse_listen("[::1]:7"),
            Ok("[::1]:7".parse::<SocketAddr>().expect("v6"))
        );
        assert!(parse_listen("localhost:7").is_ok_and(|a| a.ip().is_loopback()));
    }

    #[test]
    fn listen_refuses_numeric_shorthand_and_malformed_hosts() {
        for spec in [
            "1:1",
            "127.1:7",
            "0x7f000001:7",
            "1.2.3:4",
            "::1:7",
            "a b:7",
            "x:99999",
            "x",
        ] {
            assert!(parse_listen(spec).is_err(), "{spec} was taken");
        }
    }

    #[test]
    fn description_and_connections_are_bounded() {
        assert!(parse_description(&"d".repeat(4096)).is_ok());
        assert!(parse_description(&"d".repeat(4097)).is_err());
        assert_eq!(parse_max_connections("1"), Ok(1));
        assert!(parse_max_connections("0").is_err());
    }

    #[test]
    fn warnings_of_a_level_say_warning_once() {
        assert_eq!(
            one_warning("a.vhd: warning: footer saved state: found 2"),
            "a.vhd: footer saved state: found 2"
        );
        assert_eq!(one_warning("warning: x"), "x");
        assert_eq!(one_warning("the chain is odd"), "the chain is odd");
    }
}
