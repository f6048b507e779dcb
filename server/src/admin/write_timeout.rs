//! A stream whose writes fail with `TimedOut` when the peer takes nothing for a while. hyper
//! bounds reading a request head (header read timeout) but not writing a response: a client
//! that asks for /metrics and never reads would keep its connection slot for as long as it
//! likes. The clock restarts whenever a write makes progress, so a slow but moving reader is
//! served in full.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub(super) struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write waits for room; cleared when one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub(super) fn new(inner: S, timeout: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Maps a write's poll: progress stops the clock, a wait starts (or checks) it.
    fn bound<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("peer took no bytes for {} ms", timeout.as_millis()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bound(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_write_the_peer_never_takes_fails_after_the_timeout() {
        runtime().block_on(async {
            // A 1 KiB pipe nobody reads: the second write cannot finish.
            let (writer, _reader) = tokio::io::duplex(1024);
            let mut stream = WriteTimeout::new(writer, Duration::from_millis(100));
            let started = tokio::time::Instant::now();
            let err = stream.write_all(&[7u8; 4096]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let waited = started.elapsed();
            assert!(
                (Duration::from_millis(90)..Duration::from_secs(2)).contains(&waited),
                "{waited:?}"
            );
        });
    }

    #[test]
    fn a_slow_reader_that_keeps_taking_bytes_gets_everything() {
        runtime().block_on(async {
            let (writer, mut reader) = tokio::io::duplex(64);
            let mut stream = WriteTimeout::new(writer, Duration::from_millis(100));
            let read = tokio::spawn(async move {
                let mut total = 0;
                let mut chunk = [0u8; 64];
                loop {
                    // Each read comes 30 ms after the last: slower than the writer, never
                    // stalled for 100 ms.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    match tokio::io::AsyncReadExt::read(&mut reader, &mut chunk).await {
                        Ok(0) | Err(_) => return total,
                        Ok(n) => total += n,
                    }
                }
            });
            stream.write_all(&[1u8; 640]).await.unwrap();
            stream.shutdown().await.unwrap();
            drop(stream);
            assert_eq!(read.await.unwrap(), 640);
        });
    }
}
