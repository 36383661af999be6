#![allow(dead_code)] // Each test file uses a part of this module.
//! What the transport tests share: a server and client configuration pair from the dev
//! PKI, with the client-link profile (256 KiB per stream, 1 MiB per connection), so one
//! stream can be blocked while the connection is not.

use protocol::frames::ALPN_CORE;
use transport::tls::{self, ClientAuth};
use transport::{DevPki, TransportProfile};

/// A server endpoint on loopback and a client endpoint ready to dial it (mutual TLS, the
/// core ALPN), both with the client-link profile.
pub fn endpoints(dir: &std::path::Path) -> (quinn::Endpoint, quinn::Endpoint) {
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config(dir));
    (server_endpoint(dir), client)
}

/// A server endpoint on loopback (mutual TLS, the core ALPN, the client-link profile).
pub fn server_endpoint(dir: &std::path::Path) -> quinn::Endpoint {
    let pki = DevPki::ensure(dir).unwrap();
    let server_config = tls::server_config(
        tls::load_certs(&pki.core_cert).unwrap(),
        tls::load_key(&pki.core_key).unwrap(),
        ALPN_CORE,
        ClientAuth::Required(tls::load_certs(&pki.ca_cert).unwrap()),
        &TransportProfile::client_link(),
    )
    .unwrap();
    quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// The client configuration that dials [`server_endpoint`].
pub fn client_config(dir: &std::path::Path) -> quinn::ClientConfig {
    let pki = DevPki::ensure(dir).unwrap();
    tls::client_config(
        tls::load_certs(&pki.ca_cert).unwrap(),
        ALPN_CORE,
        Some((
            tls::load_certs(&pki.edge_client_cert).unwrap(),
            tls::load_key(&pki.edge_client_key).unwrap(),
        )),
        &TransportProfile::client_link(),
    )
    .unwrap()
}
