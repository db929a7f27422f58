//! The archive stream handed to the component when it reads one (vet and push).
//!
//! wasmtime-wasi's `AsyncReadStream` reads 64 KiB at a time, one chunk ahead, so the guest
//! waits on the file for every 64 KiB it hashes. [`ReadAhead`] reads in 1 MiB chunks and keeps
//! several ready, so reading the archive overlaps with the guest's hashing and uploading.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

/// Size of each read from the source.
const CHUNK: usize = 1 << 20;
/// Chunks read ahead of the guest: bounds the memory at `CHUNK * (DEPTH + 1)`.
const DEPTH: usize = 4;

pub struct ReadAhead {
    receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    /// What is left of the chunk being consumed, or the error or end that came next.
    current: Option<Result<Bytes, StreamError>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    pub fn new<R: AsyncRead + Send + Unpin + 'static>(mut source: R) -> Self {
        let (sender, receiver) = mpsc::channel(DEPTH);
        let task = tokio::spawn(async move {
            loop {
                let mut buf = BytesMut::with_capacity(CHUNK);
                // Fill the chunk: a file read may return less than asked.
                let result = loop {
                    match source.read_buf(&mut buf).await {
                        Ok(0) => break Ok(()),
                        Ok(_) if buf.len() < CHUNK => continue,
                        Ok(_) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                let end = buf.is_empty();
                let sent = match result {
                    Ok(()) if end => break,
                    Ok(()) => sender.send(Ok(buf.freeze())).await,
                    Err(e) => {
                        let _ = sender.send(Err(e)).await;
                        break;
                    }
                };
                if sent.is_err() {
                    break; // The guest dropped the stream.
                }
            }
        });
        ReadAhead {
            receiver,
            current: None,
            task,
        }
    }

    /// The next chunk, end or error, without waiting; `None` if none is ready yet.
    fn try_next(&mut self) -> Option<Result<Bytes, StreamError>> {
        match self.receiver.try_recv() {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => Some(Err(StreamError::LastOperationFailed(e.into()))),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(StreamError::Closed)),
            Err(mpsc::error::TryRecvError::Empty) => None,
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl InputStream for ReadAhead {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.current.is_none() {
            self.current = self.try_next();
        }
        match self.current.take() {
            None => Ok(Bytes::new()),
            Some(Ok(mut chunk)) => {
                let head = chunk.split_to(size.min(chunk.len()));
                if !chunk.is_empty() {
                    self.current = Some(Ok(chunk));
                }
                Ok(head)
            }
            Some(Err(e)) => {
                // The end and errors stay: every later read reports them again.
                let again = match &e {
                    StreamError::Closed => StreamError::Closed,
                    other => StreamError::LastOperationFailed(wasmtime::format_err!("{other}")),
                };
                self.current = Some(Err(again));
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for ReadAhead {
    async fn ready(&mut self) {
        if self.current.is_some() {
            return;
        }
        self.current = Some(match self.receiver.recv().await {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(StreamError::LastOperationFailed(e.into())),
            None => Err(StreamError::Closed),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_everything_in_order_then_reports_the_end() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        let mut stream = ReadAhead::new(std::io::Cursor::new(data.clone()));
        let mut got = Vec::new();
        loop {
            match stream.blocking_read(700_000).await {
                Ok(b) => {
                    assert!(b.len() <= 700_000);
                    got.extend_from_slice(&b);
                }
                Err(StreamError::Closed) => break,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(got, data);
        assert!(matches!(stream.read(10), Err(StreamError::Closed)));
    }

    #[tokio::test]
    async fn a_read_error_reaches_the_guest() {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")))
            }
        }
        let mut stream = ReadAhead::new(Failing);
        let err = stream.blocking_read(10).await.unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
}
