//! Client endpoints that read one datagram per receive buffer.
//!
//! quinn sizes an endpoint's receive buffer for the largest batch its socket may return:
//! 32 buffers (one `recvmmsg`) of 64 coalesced datagrams each when Linux's UDP GRO is on,
//! about 3 MB, allocated and zeroed when the endpoint is made. On the bench machine that
//! took 3–7 ms of every first connect (page faults and zeroing), longer than the QUIC
//! and quichat handshakes together. A chat client receives a few packets per round trip,
//! far from what GRO is for, so its endpoint turns GRO off and reads one datagram per
//! buffer: 32 × 1,472 bytes, 47 KB.
//!
//! Servers keep quinn's default: one endpoint serves every connection, and GRO saves
//! them work per datagram.
//!
//! Every endpoint here also asks the kernel for a large UDP receive buffer
//! ([`CLIENT_RECV_BUFFER_BYTES`], [`SERVER_RECV_BUFFER_BYTES`]). With the default (208 KiB
//! on Linux, about 90 full datagrams) a burst that the peer's flow control allows, such as
//! the replay of a player's backlog, overflowed it: offline drains of 10,000 messages
//! lost up to 139 datagrams each on loopback, every one resent, and each loss episode
//! halves the sender's congestion window. The kernel charges the buffer only while
//! datagrams wait in it, so an idle socket costs nothing more.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// A client endpoint bound to `bind`, on the current tokio runtime, reading one datagram
/// per receive buffer (see the module docs). Like [`quinn::Endpoint::client`], an IPv6
/// `bind` address is made dual-stack where the system allows it.
pub fn client_endpoint(bind: SocketAddr) -> io::Result<quinn::Endpoint> {
    let socket = bind_udp(bind, CLIENT_RECV_BUFFER_BYTES)?;
    let runtime = quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime"))?;
    // quinn turns GRO on while wrapping the socket; the clone is the same socket, kept to
    // turn it off again.
    let handle = socket.try_clone()?;
    let wrapped = runtime.wrap_udp_socket(socket)?;
    let socket: Arc<dyn AsyncUdpSocket> = if wrapped.max_receive_segments() > 1 {
        disable_gro(&handle)?;
        Arc::new(OneSegment(wrapped))
    } else {
        wrapped
    };
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime,
    )
}

/// An endpoint for an edge or a core, on the current tokio runtime: quinn's defaults (GRO
/// on where the system has it) on a socket bound to `bind` with a receive buffer of
/// [`SERVER_RECV_BUFFER_BYTES`]. `server` is `None` for an endpoint that only dials (the
/// edge's link to its core). An IPv6 `bind` address is made dual-stack where the system
/// allows it.
pub fn server_endpoint(
    server: Option<quinn::ServerConfig>,
    bind: SocketAddr,
) -> io::Result<quinn::Endpoint> {
    let socket = bind_udp(bind, SERVER_RECV_BUFFER_BYTES)?;
    let runtime = quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
}

/// The receive buffer a client's socket asks for: twice the client's connection-level
/// flow-control window (1 MiB, [`crate::TransportProfile::client_link`]), since the kernel
/// counts each datagram at about twice its size, so that whatever the edge may send
/// at once fits.
pub const CLIENT_RECV_BUFFER_BYTES: usize = 2 * 1024 * 1024;
/// The receive buffer an edge's or a core's socket asks for: one socket takes every
/// client's datagrams, or a link's batches. Linux grants at most `net.core.rmem_max`
/// (often 208 KiB by default): raise it to at least this for a server.
pub const SERVER_RECV_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `bind`, asking for a receive buffer of `recv_buffer` bytes.
fn bind_udp(bind: SocketAddr, recv_buffer: usize) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if bind.is_ipv6() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "unable to make the socket dual-stack");
        }
    }
    set_recv_buffer(&socket, recv_buffer);
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

/// Asks for a receive buffer of `want` bytes. A smaller one still works (bursts then
/// lose datagrams, which QUIC resends), so a refusal or a cap is logged, not returned:
/// once per process at `warn` for a server's size, at `debug` otherwise.
fn set_recv_buffer(socket: &socket2::Socket, want: usize) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = socket.set_recv_buffer_size(want) {
        tracing::debug!(error = %e, want, "unable to set the UDP receive buffer size");
        return;
    }
    // Linux reports twice what it granted (the other half is its own bookkeeping).
    let granted = match socket.recv_buffer_size() {
        Ok(got) if cfg!(target_os = "linux") => got / 2,
        Ok(got) => got,
        Err(_) => return,
    };
    if granted >= want {
        return;
    }
    if want >= SERVER_RECV_BUFFER_BYTES && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            granted,
            want,
            "the UDP receive buffer is smaller than asked for; raise net.core.rmem_max to \
             at least {want}, or bursts will lose datagrams"
        );
    } else {
        tracing::debug!(
            granted,
            want,
            "the UDP receive buffer is smaller than asked for"
        );
    }
}

/// Turns Linux's UDP GRO off, so the kernel hands over each datagram on its own.
#[cfg(target_os = "linux")]
fn disable_gro(socket: &std::net::UdpSocket) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGroSegment, &false)
        .map_err(io::Error::from)
}

/// Elsewhere quinn never turns GRO on (it reports one segment), so this is not reached.
#[cfg(not(target_os = "linux"))]
fn disable_gro(_socket: &std::net::UdpSocket) -> io::Result<()> {
    Err(io::Error::other(
        "receive offload on a system without UDP GRO",
    ))
}

/// quinn's socket, reporting one datagram per receive buffer (its GRO is off).
struct OneSegment(Arc<dyn AsyncUdpSocket>);

impl fmt::Debug for OneSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OneSegment").field(&self.0).finish()
    }
}

impl AsyncUdpSocket for OneSegment {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `net.core.rmem_max`: the most an unprivileged socket is granted.
    fn rmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    // A socket left at the default buffer (208 KiB) lost datagrams in every offline drain;
    // ours must get the size asked for, or as much as the system allows.
    #[test]
    fn a_socket_gets_the_receive_buffer_it_asks_for_up_to_the_system_cap() {
        for want in [CLIENT_RECV_BUFFER_BYTES, SERVER_RECV_BUFFER_BYTES] {
            let socket =
                socket2::Socket::from(bind_udp("127.0.0.1:0".parse().unwrap(), want).unwrap());
            // Linux reports twice what it granted.
            let granted = socket.recv_buffer_size().unwrap() / 2;
            let expected = want.min(rmem_max());
            assert!(
                granted >= expected,
                "asked for {want}, allowed {expected}, granted {granted}"
            );
        }
    }
}
