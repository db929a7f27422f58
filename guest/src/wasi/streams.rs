//! `std::io` adapters over wasi:io streams and a wasi:filesystem file.

use super::fetch::FETCH_CHUNK;
use crate::error::Error;
use crate::ops;
use std::io::{self, Read, Write};
use wasip2::filesystem::types::Descriptor;
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// `std::io::Write` over a borrowed wasi output stream, honouring its write budget.
pub(super) struct StreamWriter<'a>(pub(super) &'a OutputStream);

impl Write for StreamWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.check_write() {
                Ok(0) => self.0.subscribe().block(),
                Ok(n) => {
                    let n = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    self.0.write(&buf[..n]).map_err(stream_error)?;
                    return Ok(n);
                }
                Err(e) => return Err(stream_error(e)),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.blocking_flush().map_err(stream_error)
    }
}

/// Pieces smaller than this are gathered into one write of the archive file.
const WRITE_GATHER: usize = 128 << 10;

/// The archive file the host handed in, written at any offset.
pub(super) struct FileArchive<'a>(pub(super) &'a Descriptor);

impl ops::ArchiveFile for FileArchive<'_> {
    fn at(&self, offset: u64) -> Result<Box<dyn Write + '_>, Error> {
        // Each write is a trip to the host: small pieces (a slow response's) are gathered
        // first, while a piece of at least this size (a loopback or fast response gives some
        // hundreds of KiB per read) goes to the host as it is, without a copy inside the
        // component first.
        Ok(Box::new(io::BufWriter::with_capacity(
            WRITE_GATHER,
            FileRegion {
                file: self.0,
                at: offset,
            },
        )))
    }

    fn size(&self) -> Result<u64, Error> {
        let stat = self
            .0
            .stat()
            .map_err(|e| Error::Io(format!("the archive file: {e}")))?;
        Ok(stat.size)
    }

    fn read_at(&self, offset: u64) -> Result<Box<dyn Read + '_>, Error> {
        Ok(Box::new(FileReader {
            file: self.0,
            at: offset,
        }))
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        self.0
            .set_size(len)
            .map_err(|e| Error::Io(format!("cutting the archive file to {len} bytes: {e}")))
    }
}

/// Reads a file from a position on, a chunk per trip to the host.
struct FileReader<'a> {
    file: &'a Descriptor,
    at: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(FETCH_CHUNK as usize) as u64;
        let (bytes, _end) = self.file.read(want, self.at).map_err(|e| {
            io::Error::other(format!("reading the archive at byte {}: {e}", self.at))
        })?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        self.at += bytes.len() as u64;
        Ok(bytes.len())
    }
}

/// Writes into a file from a position on (`descriptor.write`: a stream of the file would take
/// 64 KiB per trip).
struct FileRegion<'a> {
    file: &'a Descriptor,
    at: u64,
}

impl Write for FileRegion<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf, self.at).map_err(|e| {
            io::Error::other(format!("writing the archive at byte {}: {e}", self.at))
        })?;
        self.at += n;
        Ok(usize::try_from(n).expect("no more than was given"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `std::io::Read` over a borrowed wasi input stream.
pub(super) struct StreamReader<'a>(pub(super) &'a InputStream);

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_stream(self.0, buf, stream_error)
    }
}

/// One blocking read; `failed` tells what a failure of the stream was.
pub(super) fn read_stream(
    stream: &InputStream,
    buf: &mut [u8],
    failed: impl FnOnce(StreamError) -> io::Error,
) -> io::Result<usize> {
    match stream.blocking_read(buf.len() as u64) {
        Ok(chunk) => {
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
        Err(StreamError::Closed) => Ok(0),
        Err(e) => Err(failed(e)),
    }
}

pub(super) fn stream_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "the stream was closed"),
        StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
    }
}
