//! Cipher suites whose AEAD keys are expanded at their first use, not when derived.
//!
//! A TLS 1.3 connection over QUIC derives more keys than it uses. rustls sets up the TLS
//! record layer's encrypter and decrypter for the application traffic secrets although
//! QUIC never encrypts a TLS record (handshake messages travel in QUIC's own packets),
//! and quinn derives the next generation of 1-RTT packet keys as soon as the handshake
//! ends, ready for a key update that most connections never see. With `ring`, every one
//! of those keys is an expanded AES key schedule and GHASH table of about 450–560 bytes
//! on the heap, for the connection's whole life: about 2 KiB of an idle connection's cost
//! at the edge (`docs/ARCHITECTURE.md`, "An idle client connection costs the edge…").
//!
//! The suites here wrap `ring`'s: deriving a key stores only its raw material (the key
//! bytes and the IV, under 80 bytes), and the expansion happens the first time the key
//! encrypts, decrypts or is asked about its limits. Keys that are used at once (the
//! current packet keys, the header-protection keys, which are not wrapped) cost the same
//! as before; keys never used are never expanded. The next packet keys are still derived
//! in advance, as RFC 9001 (section 6.3) recommends: what waits is only the expansion of
//! secret bytes already computed, on the receiving side at the first packet whose key
//! phase differs. That expansion comes before the packet is opened, whether it then
//! opens or not, so its timing tells an observer nothing about the packet's validity,
//! which is the side channel section 6.3 guards against.

use std::sync::{Arc, LazyLock, OnceLock};

use rustls::SupportedCipherSuite;
use rustls::crypto::CryptoProvider;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    OutboundOpaqueMessage, OutboundPlainMessage, Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::quic::{self, HeaderProtectionKey, PacketKey, Tag};
use rustls::{CipherSuiteCommon, ConnectionTrafficSecrets, Error, Tls13CipherSuite};

/// `ring`'s provider with its TLS 1.3 suites wrapped so that keys expand on first use.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites().to_vec();
    Arc::new(provider)
}

/// The wrapped suites, built once per process: a `Tls13CipherSuite` is referred to as
/// `&'static`, so each wrapper is leaked exactly once.
fn suites() -> &'static [SupportedCipherSuite] {
    static SUITES: OnceLock<Vec<SupportedCipherSuite>> = OnceLock::new();
    SUITES.get_or_init(|| {
        rustls::crypto::ring::default_provider()
            .cipher_suites
            .into_iter()
            .map(|suite| match suite {
                SupportedCipherSuite::Tls13(inner) => {
                    SupportedCipherSuite::Tls13(Box::leak(Box::new(wrap(inner))))
                }
                tls12 => tls12,
            })
            .collect()
    })
}

fn wrap(inner: &'static Tls13CipherSuite) -> Tls13CipherSuite {
    let aead: &'static LazyAead = Box::leak(Box::new(LazyAead(inner.aead_alg)));
    let quic = inner.quic.map(|alg| {
        let lazy: &'static LazyQuic = Box::leak(Box::new(LazyQuic(alg)));
        lazy as &'static dyn quic::Algorithm
    });
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: inner.common.suite,
            hash_provider: inner.common.hash_provider,
            confidentiality_limit: inner.common.confidentiality_limit,
        },
        hkdf_provider: inner.hkdf_provider,
        aead_alg: aead,
        quic,
    }
}

/// The QUIC side of a suite: packet keys expand lazily, header-protection keys at once
/// (every packet uses them from the first).
struct LazyQuic(&'static dyn quic::Algorithm);

impl quic::Algorithm for LazyQuic {
    fn packet_key(&self, key: AeadKey, iv: Iv) -> Box<dyn PacketKey> {
        let alg = self.0;
        Box::new(LazyPacketKey(LazyLock::new(move || {
            alg.packet_key(key, iv)
        })))
    }

    fn header_protection_key(&self, key: AeadKey) -> Box<dyn HeaderProtectionKey> {
        self.0.header_protection_key(key)
    }

    fn aead_key_len(&self) -> usize {
        self.0.aead_key_len()
    }

    fn fips(&self) -> bool {
        self.0.fips()
    }
}

/// A packet key, expanded the first time it is used. `F` makes it from the key bytes; it is
/// a closure type, so the raw material lives inline instead of in a second allocation.
struct LazyPacketKey<F>(LazyLock<Box<dyn PacketKey>, F>);

impl<F: FnOnce() -> Box<dyn PacketKey> + Send> PacketKey for LazyPacketKey<F> {
    fn encrypt_in_place(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &mut [u8],
    ) -> Result<Tag, Error> {
        self.0.encrypt_in_place(packet_number, header, payload)
    }

    fn encrypt_in_place_for_path(
        &self,
        path_id: u32,
        packet_number: u64,
        header: &[u8],
        payload: &mut [u8],
    ) -> Result<Tag, Error> {
        self.0
            .encrypt_in_place_for_path(path_id, packet_number, header, payload)
    }

    fn decrypt_in_place<'a>(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &'a mut [u8],
    ) -> Result<&'a [u8], Error> {
        self.0.decrypt_in_place(packet_number, header, payload)
    }

    fn decrypt_in_place_for_path<'a>(
        &self,
        path_id: u32,
        packet_number: u64,
        header: &[u8],
        payload: &'a mut [u8],
    ) -> Result<&'a [u8], Error> {
        self.0
            .decrypt_in_place_for_path(path_id, packet_number, header, payload)
    }

    fn tag_len(&self) -> usize {
        self.0.tag_len()
    }

    fn confidentiality_limit(&self) -> u64 {
        self.0.confidentiality_limit()
    }

    fn integrity_limit(&self) -> u64 {
        self.0.integrity_limit()
    }
}

/// The TLS record layer's side of a suite: over QUIC it is never used, so its keys are
/// never expanded; over TLS on TCP they would expand at the first record.
struct LazyAead(&'static dyn Tls13AeadAlgorithm);

impl Tls13AeadAlgorithm for LazyAead {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        let alg = self.0;
        Box::new(LazyEncrypter(LazyRecordKey::new(move || {
            alg.encrypter(key, iv)
        })))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        let alg = self.0;
        Box::new(LazyDecrypter(LazyRecordKey::new(move || {
            alg.decrypter(key, iv)
        })))
    }

    fn key_len(&self) -> usize {
        self.0.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.0.extract_keys(key, iv)
    }

    fn fips(&self) -> bool {
        self.0.fips()
    }
}

/// A record-layer key: its raw material until the first record, then the expanded key.
/// (Record keys are used through `&mut self`, so no lock is needed.) `F` makes the key; it
/// is a closure type, so the raw material lives inline.
struct LazyRecordKey<T: ?Sized, F> {
    make: Option<F>,
    key: Option<Box<T>>,
}

impl<T: ?Sized, F: FnOnce() -> Box<T>> LazyRecordKey<T, F> {
    fn new(make: F) -> Self {
        Self {
            make: Some(make),
            key: None,
        }
    }

    /// The expanded key, built now if this is its first use.
    fn force(&mut self) -> Option<&mut T> {
        if let (None, Some(make)) = (&self.key, self.make.take()) {
            self.key = Some(make());
        }
        self.key.as_deref_mut()
    }
}

/// A record encrypter, expanded at its first record.
struct LazyEncrypter<F>(LazyRecordKey<dyn MessageEncrypter, F>);

impl<F: FnOnce() -> Box<dyn MessageEncrypter> + Send + Sync> MessageEncrypter for LazyEncrypter<F> {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        match self.0.force() {
            Some(key) => key.encrypt(msg, seq),
            None => Err(Error::EncryptError),
        }
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        match &self.0.key {
            Some(key) => key.encrypted_payload_len(payload_len),
            // Not expanded yet (and `&self` cannot expand it): a TLS 1.3 record adds its
            // content type byte and a 16-byte tag with every AEAD rustls offers.
            None => payload_len + 1 + 16,
        }
    }
}

/// A record decrypter, expanded at its first record.
struct LazyDecrypter<F>(LazyRecordKey<dyn MessageDecrypter, F>);

impl<F: FnOnce() -> Box<dyn MessageDecrypter> + Send + Sync> MessageDecrypter for LazyDecrypter<F> {
    fn decrypt<'a>(
        &mut self,
        msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        match self.0.force() {
            Some(key) => key.decrypt(msg, seq),
            None => Err(Error::DecryptError),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Every wrapped QUIC suite seals and opens exactly as `ring`'s own keys do, and
    /// reports the same limits. (Suites whose keys are 32 bytes: `AeadKey` can only be
    /// built at its full length outside rustls.)
    #[test]
    fn lazy_packet_keys_interoperate_with_ring_keys() {
        let mut checked = 0;
        for suite in suites() {
            let Some(lazy) = suite.tls13().and_then(|s| s.quic) else {
                continue; // TLS 1.2: no QUIC
            };
            let plain = rustls::crypto::ring::default_provider()
                .cipher_suites
                .iter()
                .find(|s| s.suite() == suite.suite())
                .and_then(|s| s.tls13())
                .and_then(|s| s.quic)
                .expect("ring's own suite");
            if plain.aead_key_len() != 32 {
                continue;
            }
            let key = || AeadKey::from([7u8; 32]);
            let iv = || Iv::new([9u8; 12]);
            let (sealer, opener) = (lazy.packet_key(key(), iv()), plain.packet_key(key(), iv()));
            let header = b"header";
            let mut packet = b"a chat message".to_vec();
            let tag = sealer.encrypt_in_place(42, header, &mut packet).unwrap();
            packet.extend_from_slice(tag.as_ref());
            let opened = opener.decrypt_in_place(42, header, &mut packet).unwrap();
            assert_eq!(opened, b"a chat message");
            assert_eq!(sealer.tag_len(), opener.tag_len());
            assert_eq!(sealer.integrity_limit(), opener.integrity_limit());
            assert_eq!(
                sealer.confidentiality_limit(),
                opener.confidentiality_limit()
            );
            checked += 1;
        }
        assert!(checked >= 2, "only {checked} suites with 32-byte keys");
    }

    /// A wrapped record encrypter seals a TLS record that `ring`'s own decrypter opens,
    /// and says the sealed length before and after its key is expanded.
    #[test]
    fn lazy_record_keys_interoperate_with_ring_keys() {
        use rustls::crypto::cipher::OutboundChunks;
        use rustls::{ContentType, ProtocolVersion};

        let mut checked = 0;
        for suite in suites() {
            let Some(lazy) = suite.tls13() else { continue };
            let plain = rustls::crypto::ring::default_provider()
                .cipher_suites
                .iter()
                .find(|s| s.suite() == suite.suite())
                .and_then(|s| s.tls13())
                .expect("ring's own suite");
            if plain.aead_alg.key_len() != 32 {
                continue;
            }
            let key = || AeadKey::from([7u8; 32]);
            let iv = || Iv::new([9u8; 12]);
            let mut sealer = lazy.aead_alg.encrypter(key(), iv());
            let mut opener = plain.aead_alg.decrypter(key(), iv());
            let before = sealer.encrypted_payload_len(14);
            let record = OutboundPlainMessage {
                typ: ContentType::ApplicationData,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(b"a chat message"),
            };
            let sealed = sealer.encrypt(record, 3).unwrap();
            assert_eq!(sealer.encrypted_payload_len(14), before);
            let mut bytes = sealed.encode();
            let body = bytes.split_off(5);
            assert_eq!(body.len(), before);
            let mut body = body;
            let inbound = InboundOpaqueMessage::new(
                ContentType::ApplicationData,
                ProtocolVersion::TLSv1_2,
                &mut body,
            );
            let opened = opener.decrypt(inbound, 3).unwrap();
            assert_eq!(opened.payload, b"a chat message");
            checked += 1;
        }
        assert!(checked >= 2, "only {checked} suites with 32-byte keys");
    }
}
