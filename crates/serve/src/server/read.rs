//! What the export's map becomes on the wire: the plan of a read reply, the gathering of
//! short pieces, and block status.
//!
//! A read's pieces ([`Export::map`]) are coalesced into [`Segment`]s: data runs of at
//! least [`SENDFILE_MIN`] bytes in a file with a descriptor go out with `sendfile`
//! (no copy through the server's memory), zero runs of at least
//! [`proto::MIN_HOLE_CHUNK`] become hole chunks (or zeros in a simple reply), and
//! everything between — the 512-byte pieces of a differencing disk whose sector bitmaps
//! alternate, short zero runs, data without a descriptor — is *gathered*: read into one
//! buffer (each file's part with one `pread` of the span it lies in when that span is
//! dense) and written with one `write`. So a read is one data chunk (holes apart),
//! whatever its map, in a few system calls. Plans are made when the reply's turn comes,
//! a window of the map at a time; a plan holds a segment per run, never a piece per
//! sector.

use crate::export::{Export, ExportError, ExportResult, Piece};
use crate::proto::{self, Descriptors};

/// Data runs at least this long are sent from their file with `sendfile`; shorter ones
/// are gathered.
pub(crate) const SENDFILE_MIN: u64 = 64 * 1024;
/// Virtual bytes mapped per step while planning a read (bounds the pieces held).
pub(crate) const PLAN_WINDOW: u64 = 4 << 20;
/// Virtual bytes gathered per step (the sender's buffer).
pub(crate) const GATHER_MAX: usize = 256 << 10;
/// A file span read at once for gathering is at most this long, and at most twice the
/// bytes wanted from it.
const SPAN_MAX: u64 = 2 * GATHER_MAX as u64;
/// Block status maps a window at a time: from this size ...
const STATUS_WINDOW_MIN: u64 = 1 << 20;
/// ... growing while windows come back in few pieces (a sparse disk), up to this.
const STATUS_WINDOW_MAX: u64 = 4 << 30;
/// Pieces one block status request walks at most; the reply then covers what was
/// walked and the client asks again for the rest.
const STATUS_MAX_PIECES: usize = 1 << 20;

/// A run of a read reply, in order from the read's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Sent with `sendfile` from `source` (which has a descriptor) at `offset`.
    File {
        source: usize,
        offset: u64,
        len: u64,
    },
    /// Reads as zeros: a hole chunk, or zeros in a data stream.
    Zero { len: u64 },
    /// Gathered into a buffer from the export's map of the range when sent.
    Gather { len: u64 },
}

impl Segment {
    pub(crate) fn len(&self) -> u64 {
        match *self {
            Segment::File { len, .. } | Segment::Zero { len } | Segment::Gather { len } => len,
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        matches!(self, Segment::Zero { .. })
    }
}

/// Coalesces pieces, in order, into segments.
pub(crate) struct Coalescer<F: Fn(usize) -> bool> {
    /// Whether a source can be sent with `sendfile`.
    has_fd: F,
    /// The run being built: pieces that continue each other merged.
    pending: Option<Piece>,
    out: Vec<Segment>,
}

impl<F: Fn(usize) -> bool> Coalescer<F> {
    pub(crate) fn new(has_fd: F) -> Self {
        Coalescer {
            has_fd,
            pending: None,
            out: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, p: Piece) {
        if p.is_empty() {
            return;
        }
        let merged = match (&mut self.pending, p) {
            (Some(Piece::Zero { len }), Piece::Zero { len: more }) => {
                *len += more;
                true
            }
            (
                Some(Piece::Data {
                    source,
                    offset,
                    len,
                }),
                Piece::Data {
                    source: s,
                    offset: o,
                    len: more,
                },
            ) if *source == s && offset.checked_add(*len) == Some(o) => {
                *len += more;
                true
            }
            _ => false,
        };
        if !merged {
            self.flush();
            self.pending = Some(p);
        }
    }

    fn flush(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let seg = match p {
            Piece::Zero { len } if len >= proto::MIN_HOLE_CHUNK => Segment::Zero { len },
            Piece::Data {
                source,
                offset,
                len,
            } if len >= SENDFILE_MIN && (self.has_fd)(source) => Segment::File {
                source,
                offset,
                len,
            },
            p => Segment::Gather { len: p.len() },
        };
        match (self.out.last_mut(), seg) {
            (Some(Segment::Gather { len }), Segment::Gather { len: more }) => *len += more,
            _ => self.out.push(seg),
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Segment> {
        self.flush();
        self.out
    }
}

/// The segments of `offset..offset + len`, mapped a window at a time. On return
/// `pieces` holds the map of the last window: of the whole read when it is at most
/// [`PLAN_WINDOW`] long, so that gathering need not map it again ([`Mapped`]).
pub(crate) fn plan(
    export: &dyn Export,
    offset: u64,
    len: u64,
    pieces: &mut Vec<Piece>,
) -> ExportResult<Vec<Segment>> {
    let mut c = Coalescer::new(|s| export.source_file(s).is_some());
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let n = PLAN_WINDOW.min(end - pos);
        map_exactly(export, pos, n, pieces)?;
        for &p in pieces.iter() {
            c.push(p);
        }
        pos += n;
    }
    Ok(c.finish())
}

/// [`Export::map`] into `pieces` (cleared), checked to cover exactly `len` bytes.
fn map_exactly(
    export: &dyn Export,
    offset: u64,
    len: u64,
    pieces: &mut Vec<Piece>,
) -> ExportResult<()> {
    pieces.clear();
    export.map(offset, len, pieces)?;
    let covered: u64 = pieces.iter().map(Piece::len).sum();
    if covered != len {
        return Err(ExportError::new(
            proto::EIO,
            format!("the map of {len} bytes at {offset} covers {covered}"),
        ));
    }
    Ok(())
}

/// The map of a whole read, kept from its plan and handed out range by range, in
/// order, to the gathering steps.
pub(crate) struct Mapped {
    /// Index of the piece holding `at`.
    next: usize,
    /// Export offset where `pieces[next]` starts.
    start: u64,
}

impl Mapped {
    /// A cursor at `offset`, the start of the read whose pieces the plan kept.
    pub(crate) fn new(offset: u64) -> Mapped {
        Mapped {
            next: 0,
            start: offset,
        }
    }

    /// Puts the pieces of `at..at + len` (cut to that range) into `out`, cleared;
    /// ranges must come in increasing order.
    fn take(&mut self, pieces: &[Piece], at: u64, len: u64, out: &mut Vec<Piece>) -> bool {
        out.clear();
        let end = at + len;
        // Skip what lies before the range (segments sent otherwise).
        while let Some(p) = pieces.get(self.next) {
            if self.start + p.len() > at {
                break;
            }
            self.start += p.len();
            self.next += 1;
        }
        let (mut i, mut s) = (self.next, self.start);
        while s < end {
            let Some(&p) = pieces.get(i) else {
                return false;
            };
            let from = at.max(s) - s;
            let to = end.min(s + p.len()) - s;
            out.push(match p {
                Piece::Zero { .. } => Piece::Zero { len: to - from },
                Piece::Data { source, offset, .. } => Piece::Data {
                    source,
                    offset: offset + from,
                    len: to - from,
                },
            });
            s += p.len();
            i += 1;
        }
        true
    }
}

/// Gathers short pieces into a buffer; holds its scratch between calls.
#[derive(Default)]
pub(crate) struct Gatherer {
    pieces: Vec<Piece>,
    span: Vec<u8>,
    sources: Vec<Span>,
}

/// The part of one source a gathered range needs.
struct Span {
    source: usize,
    lo: u64,
    hi: u64,
    bytes: u64,
}

impl Gatherer {
    /// Fills `dst` with the export's bytes at `offset` (at most [`GATHER_MAX`]), from
    /// the read's map when its plan kept it (`mapped`: the cursor and the pieces),
    /// else from a map made now.
    pub(crate) fn fill(
        &mut self,
        export: &dyn Export,
        offset: u64,
        dst: &mut [u8],
        mapped: Option<(&mut Mapped, &[Piece])>,
    ) -> ExportResult<()> {
        let len = dst.len() as u64;
        let taken = mapped.is_some_and(|(m, p)| m.take(p, offset, len, &mut self.pieces));
        if !taken {
            map_exactly(export, offset, len, &mut self.pieces)?;
        }
        self.sources.clear();
        let mut at = 0usize;
        for p in &self.pieces {
            match *p {
                Piece::Zero { len } => dst[at..at + len as usize].fill(0),
                Piece::Data {
                    source,
                    offset,
                    len,
                } => match self.sources.iter_mut().find(|s| s.source == source) {
                    Some(s) => {
                        s.lo = s.lo.min(offset);
                        s.hi = s.hi.max(offset + len);
                        s.bytes += len;
                    }
                    None => self.sources.push(Span {
                        source,
                        lo: offset,
                        hi: offset + len,
                        bytes: len,
                    }),
                },
            }
            at += p.len() as usize;
        }
        for s in &self.sources {
            let span = s.hi - s.lo;
            // One read of the span when it is dense (the sectors of a block, every
            // other one wanted), else one read per piece.
            let dense = span <= SPAN_MAX && span <= 2 * s.bytes;
            if dense {
                if self.span.len() < span as usize {
                    self.span.resize(span as usize, 0);
                }
                export.read_source(s.source, s.lo, &mut self.span[..span as usize])?;
            }
            let mut at = 0usize;
            for p in &self.pieces {
                let n = p.len() as usize;
                if let Piece::Data { source, offset, .. } = *p {
                    if source == s.source {
                        if dense {
                            let from = (offset - s.lo) as usize;
                            dst[at..at + n].copy_from_slice(&self.span[from..from + n]);
                        } else {
                            export.read_source(source, offset, &mut dst[at..at + n])?;
                        }
                    }
                }
                at += n;
            }
        }
        Ok(())
    }
}

/// Block status descriptors of `offset..offset + len`: the map walked a window at a
/// time (windows grow over sparse ranges), until the range, [`proto::MAX_DESCRIPTORS`]
/// or [`STATUS_MAX_PIECES`] is reached.
pub(crate) fn block_status(
    export: &dyn Export,
    offset: u64,
    len: u64,
    req_one: bool,
    pieces: &mut Vec<Piece>,
) -> ExportResult<Vec<(u32, u32)>> {
    let mut d = Descriptors::new(req_one);
    let end = offset + len;
    let mut pos = offset;
    let mut window = STATUS_WINDOW_MIN;
    let mut walked = 0usize;
    while pos < end && !d.is_full() && walked < STATUS_MAX_PIECES {
        let n = window.min(end - pos);
        map_exactly(export, pos, n, pieces)?;
        for p in pieces.iter() {
            if !d.push(p.len(), matches!(p, Piece::Zero { .. })) {
                break;
            }
        }
        walked += pieces.len();
        pos += n;
        window = match pieces.len() {
            0..=16 => (window * 2).min(STATUS_WINDOW_MAX),
            4097.. => (window / 2).max(STATUS_WINDOW_MIN),
            _ => window,
        };
    }
    Ok(d.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(source: usize, offset: u64, len: u64) -> Piece {
        Piece::Data {
            source,
            offset,
            len,
        }
    }

    fn coalesce(pieces: &[Piece]) -> Vec<Segment> {
        let mut c = Coalescer::new(|s| s != 9);
        for &p in pieces {
            c.push(p);
        }
        c.finish()
    }

    #[test]
    fn kept_map_is_handed_out_cut_to_each_range_in_order() {
        let pieces = [
            data(0, 1000, 512),
            Piece::Zero { len: 512 },
            data(1, 0, 1024),
        ];
        let mut m = Mapped::new(100);
        let mut out = Vec::new();
        // From the middle of the first piece into the zeros.
        assert!(m.take(&pieces, 356, 512, &mut out));
        assert_eq!(out, vec![data(0, 1256, 256), Piece::Zero { len: 256 }]);
        // Skipping ahead into the last piece.
        assert!(m.take(&pieces, 1124 + 24, 1000, &mut out));
        assert_eq!(out, vec![data(1, 24, 1000)]);
        // Past the kept map: not taken (the caller maps it).
        assert!(!m.take(&pieces, 2000, 512, &mut out));
    }

    #[test]
    fn alternating_sectors_are_one_gathered_run() {
        // Every other sector from the child (source 0), the rest from the parent.
        let pieces: Vec<Piece> = (0..4096u64)
            .map(|i| data((i % 2) as usize, 4096 + i * 512, 512))
            .collect();
        assert_eq!(coalesce(&pieces), vec![Segment::Gather { len: 4096 * 512 }]);
    }

    #[test]
    fn long_runs_go_with_sendfile_and_long_zeros_as_holes() {
        let segs = coalesce(&[
            data(0, 1 << 20, 64 * 1024),
            data(0, (1 << 20) + 64 * 1024, 512), // continues the run: merged
            Piece::Zero { len: 512 },
            data(1, 0, 4096),
            Piece::Zero { len: 64 * 1024 },
            data(9, 0, 1 << 20), // no descriptor: gathered
        ]);
        assert_eq!(
            segs,
            vec![
                Segment::File {
                    source: 0,
                    offset: 1 << 20,
                    len: 64 * 1024 + 512
                },
                Segment::Gather { len: 512 + 4096 },
                Segment::Zero { len: 64 * 1024 },
                Segment::Gather { len: 1 << 20 },
            ]
        );
    }

    #[test]
    fn pieces_split_at_window_ends_are_joined_before_they_are_judged() {
        // A 64 KiB run cut in two halves (as two map windows give it) still goes with
        // sendfile; two short zero runs make one hole.
        let segs = coalesce(&[
            data(0, 0, 32 * 1024),
            data(0, 32 * 1024, 32 * 1024),
            Piece::Zero { len: 40 * 1024 },
            Piece::Zero { len: 40 * 1024 },
        ]);
        assert_eq!(
            segs,
            vec![
                Segment::File {
                    source: 0,
                    offset: 0,
                    len: 64 * 1024
                },
                Segment::Zero { len: 80 * 1024 },
            ]
        );
    }
}
