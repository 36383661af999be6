//! MQTT client set-up: rumqttc options for a persistent session over TLS or plain TCP.
//!
//! TLS goes through a rustls `ClientConfig` built here with the ring provider (the
//! workspace's only crypto provider) trusting the broker's dev CA; rumqttc's own default
//! would pull in aws-lc.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::{AsyncClient, EventLoop, MqttOptions, NetworkOptions, TlsConfiguration, Transport};

use super::broker::{Mosquitto, MqttTransport};

/// Requests (publishes, subscribes) a client queues for its event loop. When full,
/// `publish` waits: the open-loop schedule then falls behind and the delay shows up as
/// latency from the intended send time, as it does for quichat's command queue.
pub const REQUEST_QUEUE: usize = 1024;

/// QoS 1 publishes a client keeps unacknowledged. Close to quichat's outbox (1024), so
/// neither side is held back by a smaller window.
pub const INFLIGHT_DEFAULT: u16 = 1000;

/// Keep-alive: long enough never to fire during a run.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Largest packet either way: the benchmark's messages are small, but a generous bound
/// keeps a large `--size` from being refused.
const PACKET_BYTES_MAX: usize = 64 * 1024;

/// A rustls client configuration (ring provider) trusting the broker's CA.
pub fn tls_config(broker: &Mosquitto) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in transport::tls::load_certs(broker.ca_cert())? {
        roots.add(cert).context("adding the broker's CA")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How to reach the broker: its port and, for TLS, the client configuration.
#[derive(Clone)]
pub struct Endpoint {
    /// The listener used.
    pub transport: MqttTransport,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The TLS configuration (used when `transport` is TLS).
    pub tls: Arc<rustls::ClientConfig>,
    /// QoS 1 publishes in flight per client.
    pub inflight: u16,
}

impl Endpoint {
    /// The endpoint for `transport` on `broker`.
    pub fn new(broker: &Mosquitto, transport: MqttTransport, inflight: u16) -> Result<Self> {
        Ok(Self {
            transport,
            port: broker.port(transport),
            tls: tls_config(broker)?,
            inflight: inflight.max(1),
        })
    }

    /// A client with a persistent session (`clean_session = false`) under the fixed
    /// `client_id`, with `TCP_NODELAY` like the broker. Nothing is sent until the event
    /// loop is polled.
    pub fn client(&self, client_id: &str) -> (AsyncClient, EventLoop) {
        // 127.0.0.1, not localhost: the broker listens on IPv4 loopback only, and the
        // dev certificate names 127.0.0.1, so TLS verifies the address dialled.
        let mut options = MqttOptions::new(client_id, "127.0.0.1", self.port);
        options
            .set_clean_session(false)
            .set_keep_alive(KEEP_ALIVE)
            .set_inflight(self.inflight)
            .set_max_packet_size(PACKET_BYTES_MAX, PACKET_BYTES_MAX);
        if self.transport == MqttTransport::Tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                self.tls.clone(),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        eventloop.set_network_options(network);
        (client, eventloop)
    }
}
