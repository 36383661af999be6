//! The dev directory: everything `quichat dev` creates so that a newcomer needs nothing
//! else, and that the client commands read back with `--dev DIR`.
//!
//! ```text
//! DIR/
//!   ca.pem, edge-*.pem, core-*.pem   the dev PKI (transport::DevPki)
//!   token-secret                     the HS256 secret dev tokens are signed with (hex)
//!   edge-addr                        the address the dev edge listens on
//!   core.redb                        the core's store
//!   devices/<user>.device            the CLI's stable device id per user
//! ```

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use protocol::{DeviceId, UserId};

/// Bytes of randomness in a generated token secret.
const TOKEN_SECRET_BYTES: usize = 32;

/// Paths inside a dev directory.
#[derive(Clone, Debug)]
pub struct DevDir {
    /// The directory itself.
    pub root: PathBuf,
}

impl DevDir {
    /// The dev directory at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The token secret's file.
    pub fn token_secret_file(&self) -> PathBuf {
        self.root.join("token-secret")
    }

    /// The file holding the edge's address.
    pub fn edge_addr_file(&self) -> PathBuf {
        self.root.join("edge-addr")
    }

    /// The core's redb file.
    pub fn db_file(&self) -> PathBuf {
        self.root.join("core.redb")
    }

    /// The CA certificate clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        transport::DevPki::paths(&self.root).ca_cert
    }

    /// Creates the token secret if missing and returns it.
    pub fn ensure_token_secret(&self) -> Result<Vec<u8>> {
        let path = self.token_secret_file();
        if !path.exists() {
            fs::create_dir_all(&self.root)
                .with_context(|| format!("creating {}", self.root.display()))?;
            let secret: [u8; TOKEN_SECRET_BYTES] = rand::random();
            fs::write(&path, hex(&secret))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        read_secret(&path)
    }

    /// The edge address written by a running `quichat dev`.
    pub fn edge_addr(&self) -> Result<SocketAddr> {
        let path = self.edge_addr_file();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is `quichat dev --data {}` running?)",
                path.display(),
                self.root.display()
            )
        })?;
        text.trim()
            .parse()
            .with_context(|| format!("{} does not hold an address", path.display()))
    }

    /// The CLI's stable device id for `user`, created on first use.
    pub fn device_for(&self, user: &UserId) -> Result<DeviceId> {
        let dir = self.root.join("devices");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // User ids may hold any printable character; name the file by a hash-free,
        // filesystem-safe encoding of the id.
        let path = dir.join(format!("{}.device", hex(user.as_str().as_bytes())));
        client::device_id_from_file(&path)
            .with_context(|| format!("keeping the device id in {}", path.display()))
    }
}

/// Reads a token secret file exactly as the edge does (its bytes, trailing whitespace
/// removed), so a token minted here verifies there.
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    Ok(edge_relay::auth::load_hs256_secret(path)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_secret_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevDir::new(dir.path());
        let first = dev.ensure_token_secret().unwrap();
        assert_eq!(first.len(), 2 * TOKEN_SECRET_BYTES);
        assert_eq!(dev.ensure_token_secret().unwrap(), first);
    }

    #[test]
    fn a_users_device_id_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let dev = DevDir::new(dir.path());
        let user = UserId::new("alice/🙂").unwrap();
        assert_eq!(
            dev.device_for(&user).unwrap(),
            dev.device_for(&user).unwrap()
        );
        let other = UserId::new("bob").unwrap();
        assert_ne!(
            dev.device_for(&user).unwrap(),
            dev.device_for(&other).unwrap()
        );
    }
}
