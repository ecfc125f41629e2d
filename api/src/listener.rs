//! The HTTP listener, with a cap on open connections (`COLLOQUY_MAX_CONNECTIONS`). Every open
//! connection holds a task and its buffers even while idle between keep-alive requests, which
//! the cap on requests in flight does not count. At the cap the server stops accepting until a
//! connection closes; newer clients wait in the kernel's accept queue, as behind Go's
//! `netutil.LimitListener`, instead of costing the server anything.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A TCP listener that keeps at most `max_connections` accepted connections open.
#[derive(Debug)]
pub struct CappedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl CappedListener {
    /// Wraps `listener`; `max_connections` is at least 1.
    pub fn new(listener: TcpListener, max_connections: usize) -> Self {
        Self { listener, slots: Arc::new(Semaphore::new(max_connections.max(1))) }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore lives as long as the listener and is never closed.
        let slot = match Arc::clone(&self.slots).acquire_owned().await {
            Ok(slot) => slot,
            Err(_) => std::future::pending().await,
        };
        // axum's own accept, which logs and retries what fails.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        (CappedConnection { stream, _slot: slot }, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted connection; its slot is given back when the server drops it.
#[derive(Debug)]
pub struct CappedConnection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for CappedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
