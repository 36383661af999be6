//! Client token verification: standard JWTs minted by the game's backend.
//!
//! A [`TokenVerifier`] is built once from the edge's configuration, for exactly one
//! algorithm: HS256 with a shared secret, or EdDSA (Ed25519) with a public key. It turns a
//! token into an [`Identity`] (`sub` → [`UserId`], `name` → display name) or an
//! [`AuthError`] that says precisely what was wrong; [`AuthError::code`] is the close code
//! the client is told.
//!
//! Only the configured algorithm is accepted. The header's `alg` is inspected *before*
//! any verification, so an unsigned token (`alg: none`) or one signed with the other
//! algorithm is refused with its own error rather than a generic one, and a key is never
//! used with an algorithm it was not configured for.
//!
//! [`mint_hs256`] and [`mint_eddsa`] mint tokens the same way a game backend would; the
//! CLI's `quichat token` and the tests use them.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::ErrorCode;
use protocol::ids::{UserId, UserIdError};
use protocol::limits::{DISPLAY_NAME_BYTES_MAX, TOKEN_BYTES_MAX};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

/// Clock skew tolerated between the token's minter and this edge, in seconds. Small on
/// purpose: an expired token stays usable for at most this long.
pub const TOKEN_LEEWAY_SECONDS: u64 = 5;

/// Why a token was refused, or why a key could not be loaded or a token minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is not a well-formed JWT (shape, base64, JSON, claim types).
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// The token is unsigned (`alg: none`); unsigned tokens are never accepted.
    #[error("token is unsigned (alg \"none\"); only {expected} tokens are accepted")]
    Unsigned {
        /// The algorithm this edge accepts.
        expected: &'static str,
    },
    /// The token is signed with an algorithm other than the configured one.
    #[error("token uses algorithm {found}; this edge accepts only {expected}")]
    WrongAlgorithm {
        /// The algorithm this edge accepts.
        expected: &'static str,
        /// The algorithm named in the token's header.
        found: String,
    },
    /// The signature does not match: forged, or signed with another key.
    #[error("token signature is invalid (forged or signed with another key)")]
    BadSignature,
    /// The token has no usable `exp` claim; tokens without an expiry are refused.
    #[error("token has no valid `exp` claim; tokens must expire")]
    MissingExpiry,
    /// The token's `exp` has passed.
    #[error("token expired; ask the game backend for a new one")]
    Expired,
    /// The token's `nbf` lies in the future.
    #[error("token is not valid yet (`nbf` in the future)")]
    NotYetValid,
    /// The token has no `sub` claim.
    #[error("token has no `sub` claim (the user id)")]
    MissingSubject,
    /// The `sub` claim is not a valid user id.
    #[error("token `sub` is not a valid user id: {0}")]
    InvalidSubject(UserIdError),
    /// The token is longer than the protocol allows.
    #[error("token is {0} bytes; the limit is {TOKEN_BYTES_MAX}")]
    TooLong(usize),
    /// The configured key is unusable (a configuration error, not the client's fault).
    #[error("token key is unusable: {0}")]
    InvalidKey(String),
    /// A token could not be minted.
    #[error("could not mint a token: {0}")]
    Mint(String),
}

impl AuthError {
    /// The close code a client presenting a token that failed this way is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::InvalidKey(_) | AuthError::Mint(_) => ErrorCode::Internal,
            _ => ErrorCode::Unauthenticated,
        }
    }
}

/// Who a verified token says the client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: UserId,
    /// The token's `name`, or the user id when absent or empty; at most
    /// [`DISPLAY_NAME_BYTES_MAX`] bytes (longer names are cut at a character boundary).
    pub name: String,
}

/// The claims quichat reads and writes. `exp` is checked by `jsonwebtoken` itself
/// (required, with [`TOKEN_LEEWAY_SECONDS`] of leeway), so it is not read here; `sub` is
/// optional in the type so that its absence gets its own error.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// The only part of a JWT header looked at before verification.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
}

/// Verifies client tokens for one configured algorithm and key.
#[derive(Clone)]
pub struct TokenVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key: for HS256 it is the shared secret.
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for HS256 tokens signed with `secret`. An empty secret is refused: it
    /// would let anyone mint tokens.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::InvalidKey("the HS256 secret is empty".into()));
        }
        Ok(Self::new(
            Algorithm::HS256,
            DecodingKey::from_secret(secret),
        ))
    }

    /// A verifier for EdDSA (Ed25519) tokens, given the public key as PEM
    /// (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    pub fn eddsa_pem(public_key_pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ed_pem(public_key_pem)
            .map_err(|e| AuthError::InvalidKey(format!("not an Ed25519 public key PEM: {e}")))?;
        // `jsonwebtoken` slices the first 32 bytes of the key when verifying; check the
        // length here so a bad key file fails at startup instead of on the first token.
        match key.try_get_as_bytes() {
            Ok(bytes) if bytes.len() == 32 => {}
            _ => {
                return Err(AuthError::InvalidKey(
                    "Ed25519 public key is not 32 bytes".into(),
                ));
            }
        }
        Ok(Self::new(Algorithm::EdDSA, key))
    }

    fn new(algorithm: Algorithm, key: DecodingKey) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = TOKEN_LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // quichat tokens name no audience; the edge is the only consumer.
        validation.validate_aud = false;
        Self {
            algorithm,
            key,
            validation,
        }
    }

    /// The algorithm this verifier accepts, as written in a JWT header.
    pub fn algorithm_name(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::TooLong(token.len()));
        }
        self.check_header(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.map_error(e))?;
        let claims = data.claims;
        let sub = claims.sub.ok_or(AuthError::MissingSubject)?;
        let user = UserId::new(sub).map_err(AuthError::InvalidSubject)?;
        let name = match claims.name {
            Some(name) if !name.is_empty() => {
                truncate_to_char_boundary(name, DISPLAY_NAME_BYTES_MAX)
            }
            _ => user.as_str().to_owned(),
        };
        Ok(Identity { user, name })
    }

    /// Refuses unsigned and wrongly signed tokens by their header alone, so each gets a
    /// precise error and the key never meets an algorithm it was not configured for.
    fn check_header(&self, token: &str) -> Result<(), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_claims), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "a JWT has three dot-separated parts".into(),
            ));
        };
        let header = base64url_decode(header)
            .ok_or_else(|| AuthError::Malformed("header is not base64url".into()))?;
        let header: RawHeader = serde_json::from_slice(&header).map_err(|e| {
            AuthError::Malformed(format!("header is not a JSON object with `alg`: {e}"))
        })?;
        let expected = self.algorithm_name();
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::Unsigned { expected });
        }
        if header.alg != expected {
            let found = truncate_to_char_boundary(header.alg, 32);
            return Err(AuthError::WrongAlgorithm { expected, found });
        }
        Ok(())
    }

    fn map_error(&self, e: jsonwebtoken::errors::Error) -> AuthError {
        match e.into_kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::MissingExpiry,
            ErrorKind::InvalidClaimFormat(claim) if claim == "exp" => AuthError::MissingExpiry,
            ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm {
                expected: self.algorithm_name(),
                found: "another algorithm".into(),
            },
            ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat => {
                AuthError::InvalidKey("the configured key cannot verify this token".into())
            }
            ErrorKind::Json(e) => AuthError::Malformed(format!("claims are not valid JSON: {e}")),
            ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url".into()),
            ErrorKind::Utf8(_) => AuthError::Malformed("a part is not UTF-8".into()),
            other => AuthError::Malformed(format!("{other:?}")),
        }
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::EdDSA => "EdDSA",
        // Only the two above are ever configured.
        _ => "unsupported",
    }
}

/// Cuts `s` to at most `max` bytes without splitting a character.
fn truncate_to_char_boundary(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Decodes unpadded base64url (RFC 4648 §5), as used in JWTs. `None` on any bad input.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let bytes = input.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() * 6 / 8;
        for i in 0..produced {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Reads an HS256 secret from a file: its bytes, with trailing whitespace removed (so a
/// file written by `echo` works). The edge and `quichat token` both read it this way.
pub fn load_hs256_secret(path: &Path) -> Result<Vec<u8>, AuthError> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| AuthError::InvalidKey(format!("reading {}: {e}", path.display())))?;
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(AuthError::InvalidKey(format!(
            "{} is empty",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Builds the verifier an [`AuthConfig`] describes, reading its key file.
pub fn verifier_from_config(config: &AuthConfig) -> Result<TokenVerifier, AuthError> {
    match config {
        AuthConfig::Hs256SecretFile(path) => TokenVerifier::hs256(&load_hs256_secret(path)?),
        AuthConfig::EddsaPublicKeyFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| AuthError::InvalidKey(format!("reading {}: {e}", path.display())))?;
            TokenVerifier::eddsa_pem(&pem)
        }
    }
}

/// Mints an HS256 token for `user`, valid for `ttl`, the way a game backend would.
pub fn mint_hs256(
    secret: &[u8],
    user: &UserId,
    name: Option<&str>,
    ttl: Duration,
) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::InvalidKey("the HS256 secret is empty".into()));
    }
    mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        user,
        name,
        ttl,
    )
}

/// Mints an EdDSA (Ed25519) token for `user`, valid for `ttl`, given the private key as
/// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn mint_eddsa(
    private_key_pem: &[u8],
    user: &UserId,
    name: Option<&str>,
    ttl: Duration,
) -> Result<String, AuthError> {
    let key = EncodingKey::from_ed_pem(private_key_pem)
        .map_err(|e| AuthError::InvalidKey(format!("not an Ed25519 private key PEM: {e}")))?;
    mint(Algorithm::EdDSA, &key, user, name, ttl)
}

fn mint(
    algorithm: Algorithm,
    key: &EncodingKey,
    user: &UserId,
    name: Option<&str>,
    ttl: Duration,
) -> Result<String, AuthError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| AuthError::Mint("system clock is before 1970".into()))?;
    let claims = Claims {
        sub: Some(user.as_str().to_owned()),
        name: name.map(str::to_owned),
        exp: Some(now.as_secs().saturating_add(ttl.as_secs().max(1))),
        iat: Some(now.as_secs()),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key)
        .map_err(|e| AuthError::Mint(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a test secret that is long enough";

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Encodes base64url without padding (the inverse of `base64url_decode`).
    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut acc = 0u32;
            for (i, &b) in chunk.iter().enumerate() {
                acc |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn hs256_token(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn ed25519_pair() -> (String, String) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        (pair.serialize_pem(), pair.public_key_pem())
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..40u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64url_decode(&b64(&data)).as_deref(), Some(&data[..]));
        }
        assert_eq!(
            base64url_decode("a"),
            None,
            "one leftover character is never valid"
        );
        assert_eq!(
            base64url_decode("ab+c"),
            None,
            "standard alphabet is not base64url"
        );
    }

    #[test]
    fn a_minted_hs256_token_verifies_to_its_user_and_name() {
        let token = mint_hs256(SECRET, &alice(), Some("Alice"), Duration::from_secs(60)).unwrap();
        let id = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(
            id,
            Identity {
                user: alice(),
                name: "Alice".into()
            }
        );
    }

    #[test]
    fn the_name_defaults_to_the_user_id_and_is_capped() {
        // Clients display the name; it must never be missing or unbounded.
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let token = mint_hs256(SECRET, &alice(), None, Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().name, "alice");
        let long = "é".repeat(DISPLAY_NAME_BYTES_MAX);
        let token = mint_hs256(SECRET, &alice(), Some(&long), Duration::from_secs(60)).unwrap();
        let name = verifier.verify(&token).unwrap().name;
        assert!(name.len() <= DISPLAY_NAME_BYTES_MAX && name.len() >= DISPLAY_NAME_BYTES_MAX - 1);
        assert!(long.starts_with(&name));
    }

    #[test]
    fn an_expired_token_is_refused_with_token_expired() {
        let token = hs256_token(&serde_json::json!({"sub": "alice", "exp": now_secs() - 60}));
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        // A token that never expires cannot be revoked by waiting: refuse it.
        let token = hs256_token(&serde_json::json!({"sub": "alice"}));
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert_eq!(err, AuthError::MissingExpiry);
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
        let token = hs256_token(&serde_json::json!({"sub": "alice", "exp": "tomorrow"}));
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert!(
            matches!(err, AuthError::MissingExpiry | AuthError::Malformed(_)),
            "{err:?}"
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused_as_forged() {
        let token = mint_hs256(b"not the secret", &alice(), None, Duration::from_secs(60)).unwrap();
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn a_token_with_edited_claims_is_refused_as_forged() {
        // Swapping the payload of a genuine token for "I am bob" must not work.
        let token = mint_hs256(SECRET, &alice(), None, Duration::from_secs(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = b64(format!(r#"{{"sub":"bob","exp":{}}}"#, now_secs() + 60).as_bytes());
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&forged)
            .unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64(format!(r#"{{"sub":"alice","exp":{}}}"#, now_secs() + 60).as_bytes());
        let token = format!("{header}.{claims}.");
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert_eq!(err, AuthError::Unsigned { expected: "HS256" });
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn eddsa_tokens_verify_with_the_public_key() {
        let (private, public) = ed25519_pair();
        let token = mint_eddsa(
            private.as_bytes(),
            &alice(),
            Some("A"),
            Duration::from_secs(60),
        )
        .unwrap();
        let id = TokenVerifier::eddsa_pem(public.as_bytes())
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(id.user, alice());
    }

    #[test]
    fn only_the_configured_algorithm_is_accepted() {
        // The classic confusion attack: an HS256 token "signed" with the public key.
        let (private, public) = ed25519_pair();
        let eddsa = TokenVerifier::eddsa_pem(public.as_bytes()).unwrap();
        let hs_with_public_key =
            mint_hs256(public.as_bytes(), &alice(), None, Duration::from_secs(60)).unwrap();
        let err = eddsa.verify(&hs_with_public_key).unwrap_err();
        assert_eq!(
            err,
            AuthError::WrongAlgorithm {
                expected: "EdDSA",
                found: "HS256".into()
            }
        );
        assert_eq!(err.code(), ErrorCode::Unauthenticated);

        let ed_token =
            mint_eddsa(private.as_bytes(), &alice(), None, Duration::from_secs(60)).unwrap();
        let err = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&ed_token)
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::WrongAlgorithm {
                expected: "HS256",
                found: "EdDSA".into()
            }
        );
    }

    #[test]
    fn an_eddsa_token_from_another_key_is_refused_as_forged() {
        let (private, _) = ed25519_pair();
        let (_, other_public) = ed25519_pair();
        let token =
            mint_eddsa(private.as_bytes(), &alice(), None, Duration::from_secs(60)).unwrap();
        let err = TokenVerifier::eddsa_pem(other_public.as_bytes())
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
    }

    #[test]
    fn bad_subjects_and_garbage_are_refused_not_panicked_on() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let exp = now_secs() + 60;
        let no_sub = hs256_token(&serde_json::json!({"exp": exp}));
        assert_eq!(
            verifier.verify(&no_sub).unwrap_err(),
            AuthError::MissingSubject
        );
        let bad_sub = hs256_token(&serde_json::json!({"sub": "a\nb", "exp": exp}));
        assert!(matches!(
            verifier.verify(&bad_sub).unwrap_err(),
            AuthError::InvalidSubject(_)
        ));
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.???.###",
            "e30.e30.",
            "\u{0}.\u{1}.\u{2}",
        ] {
            let err = verifier.verify(garbage).unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::Unauthenticated,
                "{garbage:?} gave {err:?}"
            );
        }
        let huge = "a".repeat(TOKEN_BYTES_MAX + 1);
        assert_eq!(
            verifier.verify(&huge).unwrap_err(),
            AuthError::TooLong(TOKEN_BYTES_MAX + 1)
        );
    }

    #[test]
    fn a_secret_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"s3cret\n").unwrap();
        assert_eq!(load_hs256_secret(&path).unwrap(), b"s3cret");
        std::fs::write(&path, b" \n").unwrap();
        assert!(matches!(
            load_hs256_secret(&path),
            Err(AuthError::InvalidKey(_))
        ));
    }

    #[test]
    fn unusable_keys_are_refused_at_construction() {
        assert!(matches!(
            TokenVerifier::hs256(b""),
            Err(AuthError::InvalidKey(_))
        ));
        assert!(matches!(
            TokenVerifier::eddsa_pem(b"not a pem"),
            Err(AuthError::InvalidKey(_))
        ));
        let (private, _) = ed25519_pair();
        // A private key where the public one belongs is a configuration mistake.
        assert!(matches!(
            TokenVerifier::eddsa_pem(private.as_bytes()),
            Err(AuthError::InvalidKey(_))
        ));
    }
}
