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

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// A client endpoint bound to `bind`, on the current tokio runtime, reading one datagram
/// per receive buffer (see the module docs). Like [`quinn::Endpoint::client`], an IPv6
/// `bind` address is made dual-stack where the system allows it.
pub fn client_endpoint(bind: SocketAddr) -> io::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if bind.is_ipv6() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "unable to make the client socket dual-stack");
        }
    }
    socket.bind(&bind.into())?;
    let socket = std::net::UdpSocket::from(socket);
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
