//! Upload and download tickets: JWTs minted by the chat server (or `mft ticket`) and verified by
//! the node.
//!
//! HS256 with the shared secret is the default; EdDSA tickets are accepted when
//! `auth.ticket_public_keys` holds Ed25519 public keys. Signatures are checked by
//! `jsonwebtoken`, whose HMAC comparison is constant-time. Every ticket names its kind, so a
//! download ticket cannot be used to upload and the other way round.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::layout::ChatType;

/// Seconds of clock skew tolerated between the chat server and the node.
const LEEWAY_S: u64 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("no ticket: send `Authorization: Bearer <ticket>`")]
    Missing,
    #[error("the ticket has expired")]
    Expired,
    #[error("the ticket is not a well-formed JWT")]
    Malformed,
    #[error("the ticket's signature does not verify")]
    BadSignature,
    #[error("this is not an {expected} ticket")]
    WrongKind { expected: &'static str },
    #[error("the ticket's claims are invalid: {0}")]
    BadClaims(String),
    #[error("cannot sign a ticket: {0}")]
    Signing(String),
    #[error("invalid ticket public key: {0}")]
    BadKey(String),
}

/// Claims of an upload ticket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadClaims {
    /// Always `"upload"`.
    pub kind: String,
    /// The sender's JID.
    pub sub: String,
    /// The recipient's JID or the room.
    pub to: String,
    /// Chat type: `im`, `groupchat` or `persistent`.
    pub chat: String,
    /// The real filename.
    pub name: String,
    /// Expected size in bytes, when the chat server knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub exp: u64,
}

/// Claims of a download ticket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DownloadClaims {
    /// Always `"download"`.
    pub kind: String,
    /// The downloader's JID.
    pub sub: String,
    /// When present, the ticket is only good for this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub res: Option<String>,
    pub exp: u64,
}

const UPLOAD_KIND: &str = "upload";
const DOWNLOAD_KIND: &str = "download";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies tickets (and mints them, for `mft ticket` and tests).
pub struct TicketAuthority {
    secret: Vec<u8>,
    ed_keys: Vec<DecodingKey>,
}

impl std::fmt::Debug for TicketAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketAuthority")
            .field("secret", &"<redacted>")
            .field("ed_keys", &self.ed_keys.len())
            .finish()
    }
}

impl TicketAuthority {
    pub fn new(secret: &[u8], ed25519_public_pems: &[String]) -> Result<Self, TicketError> {
        let ed_keys = ed25519_public_pems
            .iter()
            .map(|pem| {
                DecodingKey::from_ed_pem(pem.as_bytes())
                    .map_err(|e| TicketError::BadKey(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TicketAuthority {
            secret: secret.to_vec(),
            ed_keys,
        })
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TicketError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| TicketError::Signing(e.to_string()))
    }

    /// Mints an upload ticket valid for `ttl_s` seconds.
    pub fn mint_upload(
        &self,
        from: &str,
        to: &str,
        chat: ChatType,
        name: &str,
        size: Option<u64>,
        ttl_s: u64,
    ) -> Result<String, TicketError> {
        self.sign(&UploadClaims {
            kind: UPLOAD_KIND.into(),
            sub: from.into(),
            to: to.into(),
            chat: chat.as_str().into(),
            name: name.into(),
            size,
            exp: unix_now() + ttl_s,
        })
    }

    /// Mints a download ticket valid for `ttl_s` seconds, optionally bound to one resource.
    pub fn mint_download(
        &self,
        who: &str,
        resource: Option<&str>,
        ttl_s: u64,
    ) -> Result<String, TicketError> {
        self.sign(&DownloadClaims {
            kind: DOWNLOAD_KIND.into(),
            sub: who.into(),
            res: resource.map(str::to_string),
            exp: unix_now() + ttl_s,
        })
    }

    /// Signs arbitrary claims with the node secret (tests use it to forge odd tickets).
    pub fn sign_raw(&self, claims: &serde_json::Value) -> Result<String, TicketError> {
        self.sign(claims)
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, token: &str) -> Result<T, TicketError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TicketError::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => DecodingKey::from_secret(&self.secret),
            Algorithm::EdDSA if !self.ed_keys.is_empty() => {
                return self.decode_eddsa(token);
            }
            _ => return Err(TicketError::BadSignature),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<T>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }

    fn decode_eddsa<T: for<'de> Deserialize<'de>>(&self, token: &str) -> Result<T, TicketError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp"]);
        let mut last = TicketError::BadSignature;
        for key in &self.ed_keys {
            match jsonwebtoken::decode::<T>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = map_jwt_error(e),
            }
            if last != TicketError::BadSignature {
                return Err(last);
            }
        }
        Err(last)
    }

    /// Verifies an upload ticket and its claims.
    pub fn verify_upload(&self, token: &str) -> Result<UploadClaims, TicketError> {
        let kind = self.peek_kind(token)?;
        if kind != UPLOAD_KIND {
            return Err(TicketError::WrongKind { expected: "upload" });
        }
        let claims: UploadClaims = self.decode(token)?;
        check_jid("sub", &claims.sub)?;
        check_jid("to", &claims.to)?;
        if claims.chat.parse::<ChatType>().is_err() {
            return Err(TicketError::BadClaims(
                "`chat` must be im, groupchat or persistent".into(),
            ));
        }
        if claims.name.is_empty()
            || claims.name.len() > MAX_NAME_BYTES
            || claims.name.chars().any(char::is_control)
        {
            return Err(TicketError::BadClaims(format!(
                "`name` must be 1 to {MAX_NAME_BYTES} bytes without control characters"
            )));
        }
        Ok(claims)
    }

    /// Verifies a download ticket.
    pub fn verify_download(&self, token: &str) -> Result<DownloadClaims, TicketError> {
        let kind = self.peek_kind(token)?;
        if kind != DOWNLOAD_KIND {
            return Err(TicketError::WrongKind {
                expected: "download",
            });
        }
        let claims: DownloadClaims = self.decode(token)?;
        check_jid("sub", &claims.sub)?;
        Ok(claims)
    }

    /// Verifies the signature first, then reads `kind`, so an unsigned token learns nothing.
    fn peek_kind(&self, token: &str) -> Result<String, TicketError> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(default)]
            kind: String,
        }
        let k: Kind = self.decode(token)?;
        Ok(k.kind)
    }
}

/// Longest JID `AFT_LOG` holds (`jid`, `to_jid`: VARCHAR(3071)).
pub const MAX_JID_CHARS: usize = 3071;
/// Longest real filename, in bytes (`real_filename`: VARCHAR(511)).
pub const MAX_NAME_BYTES: usize = 511;

fn check_jid(claim: &str, value: &str) -> Result<(), TicketError> {
    if value.is_empty()
        || value.chars().count() > MAX_JID_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(TicketError::BadClaims(format!(
            "`{claim}` must be 1 to {MAX_JID_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TicketError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TicketError::Expired,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TicketError::BadSignature,
        ErrorKind::MissingRequiredClaim(c) => TicketError::BadClaims(format!("missing `{c}`")),
        ErrorKind::InvalidClaimFormat(c) => TicketError::BadClaims(format!("bad `{c}`")),
        ErrorKind::Json(e) => TicketError::BadClaims(e.to_string()),
        _ => TicketError::Malformed,
    }
}

/// Extracts the token from an `Authorization: Bearer …` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, TicketError> {
    let value = header.ok_or(TicketError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(TicketError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TicketError::Malformed);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TicketAuthority {
        TicketAuthority::new(b"0123456789abcdef0123456789abcdef", &[]).unwrap()
    }

    #[test]
    fn upload_round_trip() {
        let a = authority();
        let t = a
            .mint_upload("a@x", "b@x", ChatType::Im, "r.pdf", Some(5), 60)
            .unwrap();
        let c = a.verify_upload(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.size), ("a@x", Some(5)));
        assert_eq!(
            a.verify_download(&t).unwrap_err(),
            TicketError::WrongKind {
                expected: "download"
            }
        );
    }

    #[test]
    fn forged_and_expired_refused() {
        let a = authority();
        let other = TicketAuthority::new(b"another-secret-another-secret!!", &[]).unwrap();
        let forged = other.mint_download("a@x", None, 60).unwrap();
        assert_eq!(
            a.verify_download(&forged).unwrap_err(),
            TicketError::BadSignature
        );
        let expired = a
            .sign_raw(&serde_json::json!({"kind":"download","sub":"a@x","exp": unix_now() - 3600}))
            .unwrap();
        assert_eq!(
            a.verify_download(&expired).unwrap_err(),
            TicketError::Expired
        );
        assert_eq!(
            a.verify_download("not.a.jwt").unwrap_err(),
            TicketError::Malformed
        );
        let none_alg =
            "eyJhbGciOiJub25lIn0.eyJraW5kIjoiZG93bmxvYWQiLCJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(a.verify_download(none_alg).is_err());
    }

    #[test]
    fn oversized_or_control_claims_refused() {
        let a = authority();
        let long = "s".repeat(MAX_JID_CHARS + 1);
        let t = a
            .mint_upload(&long, "b@x", ChatType::Im, "f", None, 60)
            .unwrap();
        assert!(matches!(
            a.verify_upload(&t),
            Err(TicketError::BadClaims(_))
        ));
        let t = a.mint_download(&long, None, 60).unwrap();
        assert!(matches!(
            a.verify_download(&t),
            Err(TicketError::BadClaims(_))
        ));
        let t = a
            .mint_upload("a@x", "b@x", ChatType::Im, "a\r\nX: 1.txt", None, 60)
            .unwrap();
        assert!(matches!(
            a.verify_upload(&t),
            Err(TicketError::BadClaims(_))
        ));
        let ok = "s".repeat(MAX_JID_CHARS);
        let t = a
            .mint_upload(&ok, "b@x", ChatType::Im, "f", None, 60)
            .unwrap();
        assert!(a.verify_upload(&t).is_ok());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(None).unwrap_err(), TicketError::Missing);
        assert!(bearer_token(Some("Basic abc")).is_err());
    }
}
