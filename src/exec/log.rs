//! An execution's live log, `DATA/executions/<id>/log`: what the program wrote on stdout and
//! stderr, in the order it was written, as records that say which stream each chunk came
//! from. The run's sinks append records ([`LogWriter`]) and announce each on the execution's
//! events ([`OutputProgress`]); followers read whole records up to the announced length
//! ([`LogReader`]), so a chunk is never split by a half-written record and program bytes are
//! never taken for framing.
//!
//! A record: one byte for the program and the stream (`1 + 2 × program`, plus 1 for
//! stderr: a single program's are 1 stdout, 2 stderr), the length as 4 bytes little endian
//! (at most [`MAX_CHUNK`]), then the bytes. A group's programs share one log.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::exec::events::OutputProgress;

/// The largest chunk one record holds; longer writes are split.
pub const MAX_CHUNK: usize = 64 * 1024;
const HEADER: usize = 5;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(text: &str) -> Option<Stream> {
        match text {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// Most programs one log tells apart (a group has at most 16).
const MAX_PROGRAMS: usize = 127;

fn tag(program: usize, stream: Stream) -> u8 {
    let stream = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    // `program` < MAX_PROGRAMS: the tag fits in a byte.
    (2 * program + stream) as u8
}

fn from_tag(tag: u8) -> Option<(usize, Stream)> {
    let t = usize::from(tag.checked_sub(1)?);
    let stream = if t % 2 == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    Some((t / 2, stream))
}

/// The log file shared by both streams' sinks; every record is written whole under the lock,
/// then its end announced.
struct Shared {
    file: std::fs::File,
    len: u64,
    progress: OutputProgress,
}

/// A sink for one stream of a run (the core writes each chunk it reads from the program).
pub struct LogWriter {
    program: usize,
    stream: Stream,
    shared: Arc<Mutex<Shared>>,
}

impl LogWriter {
    /// The two sinks (stdout, stderr) of each of `programs` programs over a new log file
    /// (at most 127 programs; more share the last one's records).
    pub fn for_programs(
        file: std::fs::File,
        progress: OutputProgress,
        programs: usize,
    ) -> Vec<(LogWriter, LogWriter)> {
        let shared = Arc::new(Mutex::new(Shared {
            file,
            len: 0,
            progress,
        }));
        (0..programs)
            .map(|i| {
                let program = i.min(MAX_PROGRAMS - 1);
                let sink = |stream| LogWriter {
                    program,
                    stream,
                    shared: shared.clone(),
                };
                (sink(Stream::Stdout), sink(Stream::Stderr))
            })
            .collect()
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for chunk in buf.chunks(MAX_CHUNK) {
            let mut record = Vec::with_capacity(HEADER + chunk.len());
            record.push(tag(self.program, self.stream));
            // A chunk is at most MAX_CHUNK bytes: its length fits in 4 bytes.
            record.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            record.extend_from_slice(chunk);
            s.file.write_all(&record)?;
            s.len += record.len() as u64;
        }
        let len = s.len;
        s.progress.appended(len);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The program that wrote it (0 for a single program).
    pub program: usize,
    pub stream: Stream,
    pub bytes: Vec<u8>,
    /// Where the next record starts (an SSE event id: a follower resumes there).
    pub next: u64,
}

/// Reads records from a log file, whole ones only, up to a length the caller knows is
/// complete.
pub struct LogReader {
    file: tokio::fs::File,
    pos: u64,
}

impl LogReader {
    /// Opens the log at `pos` (0, or where an earlier follower stopped); `None` when there is
    /// no log (the run has not started).
    pub async fn open(path: &std::path::Path, pos: u64) -> std::io::Result<Option<LogReader>> {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(std::io::SeekFrom::Start(pos)).await?;
        Ok(Some(LogReader { file, pos }))
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next record that ends at or before `complete`; `None` when there is none yet.
    /// A damaged record (never written by [`LogWriter`]) is an error.
    pub async fn next(&mut self, complete: u64) -> std::io::Result<Option<Chunk>> {
        if self.pos + HEADER as u64 > complete {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        self.file.read_exact(&mut header).await?;
        let damaged = || std::io::Error::new(std::io::ErrorKind::InvalidData, "a damaged log");
        let (program, stream) = from_tag(header[0]).ok_or_else(damaged)?;
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_CHUNK {
            return Err(damaged());
        }
        let end = self.pos + (HEADER + len) as u64;
        if end > complete {
            // Not whole yet: read it again once it is.
            self.file.seek(std::io::SeekFrom::Start(self.pos)).await?;
            return Ok(None);
        }
        let mut bytes = vec![0u8; len];
        self.file.read_exact(&mut bytes).await?;
        self.pos = end;
        Ok(Some(Chunk {
            program,
            stream,
            bytes,
            next: end,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::events::Events;

    #[tokio::test]
    async fn records_round_trip_and_half_written_ones_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let events = Events::new();
        let mut progress = events.follow_output("e");
        let mut sinks =
            LogWriter::for_programs(std::fs::File::create(&path).unwrap(), events.output("e"), 2);
        let (mut out1, _) = sinks.pop().unwrap();
        let (mut out, mut err) = sinks.pop().unwrap();
        out.write_all(b"hello\r\nevent: end\n\n").unwrap();
        err.write_all(&vec![7u8; MAX_CHUNK + 1]).unwrap();
        let complete = *progress.borrow_and_update();
        assert_eq!(
            complete,
            std::fs::metadata(&path).unwrap().len(),
            "every write is announced"
        );
        let mut r = LogReader::open(&path, 0).await.unwrap().unwrap();
        let first = r.next(complete).await.unwrap().unwrap();
        assert_eq!(first.stream, Stream::Stdout);
        assert_eq!(first.bytes, b"hello\r\nevent: end\n\n");
        let second = r.next(complete).await.unwrap().unwrap();
        assert_eq!(
            (second.stream, second.bytes.len()),
            (Stream::Stderr, MAX_CHUNK)
        );
        // The last record is not announced as complete yet: it waits.
        assert_eq!(r.next(second.next + 3).await.unwrap(), None);
        let third = r.next(complete).await.unwrap().unwrap();
        assert_eq!(third.bytes, [7]);
        assert_eq!(r.next(complete).await.unwrap(), None);
        // A group's second program: its records say so.
        out1.write_all(b"two").unwrap();
        let complete = *progress.borrow_and_update();
        let fourth = r.next(complete).await.unwrap().unwrap();
        assert_eq!(
            (fourth.program, fourth.stream, fourth.bytes.as_slice()),
            (1, Stream::Stdout, &b"two"[..])
        );
        assert_eq!(first.program, 0);
        // Resuming where a chunk ended gives what came after it.
        let mut again = LogReader::open(&path, first.next).await.unwrap().unwrap();
        assert_eq!(again.next(complete).await.unwrap().unwrap(), second);
        // A position inside a record reads as damaged or as a record, never past `complete`.
        let mut odd = LogReader::open(&path, 1).await.unwrap().unwrap();
        assert!(odd.next(complete).await.is_err());
    }
}
