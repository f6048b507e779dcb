//! Listening sockets: one per shard on the same address (SO_REUSEPORT), so the kernel spreads
//! incoming connections across shards. Accepted sockets never get a process fd: they go
//! straight into the shard ring's fixed-file table (see ring/).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Caps the kernel send buffer of every connection accepted from `listener` (accepted sockets
/// inherit SO_SNDBUF and its lock): a client that never reads pins at most about twice
/// `send_buffer_bytes` of kernel memory. 0 leaves the kernel's autotuning.
pub(crate) fn limit_send_buffer(listener: &Socket, send_buffer_bytes: u32) -> io::Result<()> {
    if send_buffer_bytes == 0 {
        return Ok(());
    }
    listener.set_send_buffer_size(send_buffer_bytes as usize)
}

/// Binds `count` listeners to `addr` with SO_REUSEPORT. With port 0, the first listener's
/// port is used for the rest. Accepted sockets inherit TCP_NODELAY from the listener.
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> io::Result<Vec<Socket>> {
    assert!(count > 0);
    let mut listeners: Vec<Socket> = Vec::with_capacity(count);
    let mut bind_addr = addr;
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(bind_addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&bind_addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        if bind_addr.port() == 0 {
            bind_addr = socket.local_addr()?.as_socket().expect("inet listener");
        }
        listeners.push(socket);
    }
    Ok(listeners)
}
