//! The writer: the one thread that changes the export. It takes writes, write zeroes,
//! trims and flushes in the order the readers queued them, serialises them through the
//! export's crash-safe write path, commits neighbouring writes together (one
//! `write_runs`, one pair of barriers for the batch) and answers each. The payload of
//! each write was taken from the payload budget ([`super::budget`]) by its reader; the
//! writer gives it back once written.

use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

use super::reader::Conn;
use super::sender::Reply;
use super::Counters;
use crate::export::{Export, ExportError, ExportResult};
use crate::proto;

/// Writes committed together at most (bytes).
const BATCH_BYTES: usize = 64 << 20;
/// Writes committed together at most (count).
const BATCH_WRITES: usize = 256;

/// What a write job does.
pub(crate) enum WriteOp {
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Zeroes {
        offset: u64,
        len: u64,
        fua: bool,
        no_hole: bool,
    },
    Trim {
        offset: u64,
        len: u64,
        fua: bool,
    },
    Flush,
}

/// One request for the writer.
pub(crate) struct WriteJob {
    pub(crate) conn: Arc<Conn>,
    pub(crate) cookie: u64,
    pub(crate) op: WriteOp,
}

/// The writer thread: takes jobs in order, commits neighbouring writes together,
/// answers each; returns once the queue is closed and drained.
pub(crate) fn run(export: &dyn Export, counters: &Counters, rx: Receiver<WriteJob>) {
    let mut next: Option<WriteJob> = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        if !matches!(job.op, WriteOp::Write { .. }) {
            run_other(export, counters, job);
            continue;
        }
        let mut batch = vec![job];
        let mut bytes = 0usize;
        while batch.len() < BATCH_WRITES && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(j) if matches!(j.op, WriteOp::Write { .. }) => {
                    if let WriteOp::Write { data, .. } = &j.op {
                        bytes += data.len();
                    }
                    batch.push(j);
                }
                Ok(j) => {
                    next = Some(j);
                    break;
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        commit_writes(export, counters, batch);
    }
}

fn commit_writes(export: &dyn Export, counters: &Counters, batch: Vec<WriteJob>) {
    let runs: Vec<(u64, &[u8], bool)> = batch
        .iter()
        .filter_map(|j| match &j.op {
            WriteOp::Write { offset, data, fua } => Some((*offset, data.as_slice(), *fua)),
            _ => None,
        })
        .collect();
    let plain: Vec<(u64, &[u8])> = runs.iter().map(|&(o, d, _)| (o, d)).collect();
    let any_fua = runs.iter().any(|r| r.2);
    let mut results: Vec<ExportResult<()>> = match export.write_runs(&plain) {
        Ok(()) => (0..plain.len()).map(|_| Ok(())).collect(),
        // Find which failed: each run again on its own (writes are idempotent).
        Err(_) => plain.iter().map(|r| export.write_runs(&[*r])).collect(),
    };
    if any_fua {
        if let Err(e) = export.flush() {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(ExportError::new(e.errno, e.message.clone()));
            }
        }
    }
    for (job, result) in batch.iter().zip(results) {
        let len = match &job.op {
            WriteOp::Write { data, .. } => data.len() as u64,
            _ => 0,
        };
        job.conn.payload.give(len);
        match result {
            Ok(()) => {
                Counters::add(&counters.bytes_written, len);
                job.conn
                    .reply(Reply::Bytes(proto::ok_reply(&job.conn.session, job.cookie)));
            }
            Err(e) => job.conn.error(counters, job.cookie, e.errno, &e.message),
        }
    }
}

fn run_other(export: &dyn Export, counters: &Counters, job: WriteJob) {
    let (result, fua) = match job.op {
        WriteOp::Zeroes {
            offset,
            len,
            fua,
            no_hole,
        } => {
            let r = export.write_zeroes(offset, len, !no_hole);
            if r.is_ok() {
                Counters::add(&counters.bytes_zeroed, len);
            }
            (r, fua)
        }
        WriteOp::Trim { offset, len, fua } => {
            let r = export.trim(offset, len);
            if r.is_ok() {
                Counters::add(&counters.bytes_trimmed, len);
            }
            (r, fua)
        }
        WriteOp::Flush => (export.flush(), false),
        WriteOp::Write { .. } => (Ok(()), false),
    };
    let result = result.and_then(|()| if fua { export.flush() } else { Ok(()) });
    match result {
        Ok(()) => job
            .conn
            .reply(Reply::Bytes(proto::ok_reply(&job.conn.session, job.cookie))),
        Err(e) => job.conn.error(counters, job.cookie, e.errno, &e.message),
    }
}
