//! The proxy's tasks: the [`Listener`] reading from clients, one upstream reader per
//! client, and one [`drive_link`] loop per direction feeding a [`Link`] and sending what
//! it releases.
//!
//! ```text
//! client ─► listen socket ─► Listener ─► [ingress channel] ─► drive_link(ToUpstream) ─► per-client socket ─► upstream
//! client ◄─ listen socket ◄─ drive_link(ToClient) ◄─ [ingress channel] ◄─ read_upstream ◄─ per-client socket ◄─ upstream
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::config::{DATAGRAM_BYTES_MAX, Direction, LinkConfig};
use super::link::{Datagram, Link};
use super::stats::{Counters, LinkCounters, bump};

/// Capacity of the channel from a reading task to its direction's [`drive_link`]. When it
/// is full the datagram is dropped and counted in `dropped_queue_full`: the link task is
/// behind, and a real network drops rather than blocks.
pub(crate) const INGRESS_CHANNEL_CAPACITY: usize = 4096;

/// Kernel buffer size asked for on every proxy socket, so a burst is dropped by the
/// configured loss rather than silently by the kernel. Best effort: Linux caps it at
/// `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Where a datagram leaving the proxy goes: the socket to send it from and its destination.
#[derive(Debug, Clone)]
pub(crate) struct Outlet {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) dest: SocketAddr,
}

/// Binds a non-blocking UDP socket with large kernel buffers.
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (name, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)),
    ] {
        if let Err(error) = result {
            tracing::debug!(%addr, %error, "could not enlarge the {name} buffer");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Where to bind the socket that talks to `upstream` for one client: loopback for a
/// loopback upstream (tests stay off the network), any address otherwise.
fn upstream_bind_addr(upstream: SocketAddr) -> SocketAddr {
    match (upstream, upstream.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (SocketAddr::V4(_), false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (SocketAddr::V6(_), true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (SocketAddr::V6(_), false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Errors a UDP receive can report for an earlier send (an ICMP "port unreachable" on
/// some platforms) or a signal: the socket is still good.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Resolves once the proxy is asked to stop (or its handle is gone).
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the handle was dropped, which also means stop.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Hands a datagram to a direction's link task, dropping it if the task is behind.
fn ingress(
    channel: &mpsc::Sender<Datagram<Outlet>>,
    counters: &LinkCounters,
    datagram: Datagram<Outlet>,
) {
    match channel.try_send(datagram) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            bump(&counters.received);
            bump(&counters.dropped_queue_full);
        }
        // The link task is gone only while the proxy shuts down.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// Reads datagrams from clients and routes them to the upstream link, creating one
/// upstream socket (and reader task) per client address.
pub(crate) struct Listener {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) upstream: SocketAddr,
    pub(crate) max_clients: usize,
    /// Each client address and the socket that speaks for it upstream. Bounded by
    /// `max_clients`; entries live as long as the proxy.
    pub(crate) clients: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// The upstream readers, aborted together when the listener stops.
    pub(crate) readers: JoinSet<()>,
    pub(crate) to_upstream: mpsc::Sender<Datagram<Outlet>>,
    pub(crate) to_client: mpsc::Sender<Datagram<Outlet>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Listener {
    /// Runs until shutdown or a fatal socket error, then stops the upstream readers.
    pub(crate) async fn run(mut self) {
        // Every client gets a buffer this size; the kernel commits pages only when a
        // large datagram actually fills them.
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        loop {
            let received = tokio::select! {
                biased;
                () = shutdown_requested(&mut self.shutdown) => break,
                received = self.socket.recv_from(&mut buf) => received,
            };
            match received {
                Ok((len, from)) => self.forward(&buf[..len], from),
                Err(error) if is_transient(&error) => {
                    tracing::debug!(%error, "transient error on the listen socket");
                }
                Err(error) => {
                    tracing::warn!(%error, "listen socket failed; proxy stops forwarding");
                    break;
                }
            }
        }
        self.readers.shutdown().await;
    }

    fn forward(&mut self, payload: &[u8], from: SocketAddr) {
        let Some(socket) = self.client_socket(from) else {
            return;
        };
        let datagram = Datagram {
            payload: payload.to_vec(),
            to: Outlet {
                socket,
                dest: self.upstream,
            },
        };
        ingress(&self.to_upstream, &self.counters.to_upstream, datagram);
    }

    /// The upstream socket for `client`, created on its first datagram; `None` if the
    /// table is full or binding failed (the datagram is then dropped and counted).
    fn client_socket(&mut self, client: SocketAddr) -> Option<Arc<UdpSocket>> {
        let table_full = self.clients.len() >= self.max_clients;
        match self.clients.entry(client) {
            Entry::Occupied(entry) => Some(entry.get().clone()),
            Entry::Vacant(_) if table_full => {
                bump(&self.counters.dropped_client_table_full);
                tracing::debug!(%client, "client table full; dropping datagram");
                None
            }
            Entry::Vacant(entry) => {
                let socket = match bind_udp(upstream_bind_addr(self.upstream)) {
                    Ok(socket) => Arc::new(socket),
                    Err(error) => {
                        bump(&self.counters.to_upstream.send_errors);
                        tracing::warn!(%client, %error, "cannot bind an upstream socket");
                        return None;
                    }
                };
                entry.insert(socket.clone());
                self.counters.clients.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%client, "new client");
                self.readers.spawn(read_upstream(UpstreamReader {
                    socket: socket.clone(),
                    upstream: self.upstream,
                    reply_to: Outlet {
                        socket: self.socket.clone(),
                        dest: client,
                    },
                    to_client: self.to_client.clone(),
                    counters: self.counters.clone(),
                }));
                Some(socket)
            }
        }
    }
}

/// What one client's upstream reader needs.
struct UpstreamReader {
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    /// The listen socket and the client's address.
    reply_to: Outlet,
    to_client: mpsc::Sender<Datagram<Outlet>>,
    counters: Arc<Counters>,
}

/// Reads the upstream's replies for one client and routes them to the client link.
async fn read_upstream(reader: UpstreamReader) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        match reader.socket.recv_from(&mut buf).await {
            Ok((_, from)) if from != reader.upstream => {
                // The socket is unconnected (so ICMP errors do not end it); anyone could
                // send to it, but only the upstream speaks for this client.
                tracing::debug!(%from, "ignoring a datagram not from the upstream");
            }
            Ok((len, _)) => {
                let datagram = Datagram {
                    payload: buf[..len].to_vec(),
                    to: reader.reply_to.clone(),
                };
                ingress(&reader.to_client, &reader.counters.to_client, datagram);
            }
            Err(error) if is_transient(&error) => {
                tracing::debug!(%error, "transient error on an upstream socket");
            }
            Err(error) => {
                tracing::warn!(client = %reader.reply_to.dest, %error, "upstream socket failed");
                return;
            }
        }
    }
}

/// What one direction's link task needs.
pub(crate) struct LinkTask {
    pub(crate) link: Link<Outlet>,
    pub(crate) input: mpsc::Receiver<Datagram<Outlet>>,
    pub(crate) config: watch::Receiver<LinkConfig>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) direction: Direction,
}

/// Feeds one direction's [`Link`] and sends what it releases, sleeping until the next due
/// time in between. Stops on shutdown, or once its input is closed and its queue empty.
pub(crate) async fn drive_link(mut task: LinkTask) {
    let counters = match task.direction {
        Direction::ToUpstream => &task.counters.to_upstream,
        Direction::ToClient => &task.counters.to_client,
    };
    let mut input_open = true;
    loop {
        let now = Instant::now().into_std();
        while let Some(datagram) = task.link.poll_transmit(now) {
            send(&datagram, counters).await;
        }
        if !input_open && task.link.is_idle() {
            return;
        }
        let timeout = task.link.poll_timeout();
        tokio::select! {
            biased;
            () = shutdown_requested(&mut task.shutdown) => return,
            () = sleep_until(timeout) => {}
            received = task.input.recv(), if input_open => match received {
                Some(datagram) => {
                    // Checked per datagram, so a datagram sent after `set_link` returned
                    // always sees the new configuration.
                    if task.config.has_changed().unwrap_or(false) {
                        task.link.set_config(task.config.borrow_and_update().clone());
                    }
                    task.link.handle_datagram(Instant::now().into_std(), datagram);
                }
                None => input_open = false,
            },
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

async fn send(datagram: &Datagram<Outlet>, counters: &LinkCounters) {
    let Outlet { socket, dest } = &datagram.to;
    match socket.send_to(&datagram.payload, *dest).await {
        Ok(_) => bump(&counters.forwarded),
        Err(error) => {
            bump(&counters.send_errors);
            tracing::debug!(%dest, %error, "send failed");
        }
    }
}
