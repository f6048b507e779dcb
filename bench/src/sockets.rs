//! Client sockets: non-blocking connects from a chosen loopback source address with
//! IP_BIND_ADDRESS_NO_PORT, so the port is picked at connect time per (src, dst, dport) 4-tuple
//! and one process can exceed the ~28k ephemeral ports of a single source address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// First loopback source address: 127.0.0.2 (127.0.0.1 is left to the server).
pub const SOURCE_ADDR_FIRST_OCTET: u8 = 2;
/// Source addresses used at most (127.0.0.2 ..= 127.0.0.251).
pub const SOURCE_ADDRS_MAX: u64 = 250;
/// Sessions per source address by default. Measured on Linux 6.18 here: one (source address,
/// destination) pair gave 12,402 connects with IP_BIND_ADDRESS_NO_PORT before EADDRNOTAVAIL
/// (connect() picks ports of one parity: about half of the 28,232 in ip_local_port_range, less
/// the ports already taken); 10,000 leaves room for TIME_WAIT leftovers and other users.
pub const SESSIONS_PER_SOURCE_ADDR_DEFAULT: u32 = 10_000;

/// Refuses any target outside the loopback range: this harness only loads local servers.
pub fn check_loopback(target: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        target.ip().is_loopback(),
        "target {target} is not a loopback address: holdfast-bench only drives servers on 127.0.0.0/8 or ::1"
    );
    Ok(())
}

/// The source address of global session `index` (IPv4 targets only; IPv6 uses the default).
pub fn source_addr(
    target: SocketAddr,
    index: u64,
    sessions_per_source_addr: u32,
) -> Option<IpAddr> {
    match target {
        SocketAddr::V4(_) => {
            let slot = (index / u64::from(sessions_per_source_addr.max(1))) % SOURCE_ADDRS_MAX;
            Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                SOURCE_ADDR_FIRST_OCTET + slot as u8,
            )))
        }
        SocketAddr::V6(_) => None,
    }
}

/// Starts a non-blocking connect. The connect completes (or fails) later: wait for writability,
/// then check `take_error()` / `peer_addr()`.
pub fn start_connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<mio::net::TcpStream> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        set_bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Makes the next close send RST instead of FIN (SO_LINGER with a zero timeout).
pub fn set_reset_on_close(stream: &mio::net::TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO))
}

fn set_bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`; the option value is a c_int that lives
    // for the duration of the call and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A short, stable name for an I/O error (a key in the failure counters).
pub fn error_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL".into(),
        Some(libc::EADDRINUSE) => "EADDRINUSE".into(),
        Some(libc::EMFILE) => "EMFILE".into(),
        Some(libc::ENFILE) => "ENFILE".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ENOBUFS) => "ENOBUFS".into(),
        Some(errno) => format!("errno_{errno}"),
        None => format!("{:?}", e.kind()),
    }
}
