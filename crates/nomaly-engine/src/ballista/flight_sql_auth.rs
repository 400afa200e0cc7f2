//! Who may run SQL through the scheduler's Arrow Flight SQL endpoint (`nomaly scheduler
//! --flight-sql --flight-sql-token-file F`): clients that present the token in the Flight
//! handshake, as the password of HTTP Basic credentials (any user name: what JDBC and ADBC drivers
//! send from `user`/`password`) or as a bearer token. The handshake answers with a session token
//! the client sends with every request; a client that skips the handshake is refused.

use async_trait::async_trait;
use ballista_flight_sql::{Authenticator, Identity};
use base64::Engine;
use std::path::Path;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Accepts handshakes that carry one shared secret.
pub struct TokenAuthenticator {
    token: String,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuthenticator { token: <hidden> }")
    }
}

impl TokenAuthenticator {
    pub fn new(token: impl Into<String>) -> TokenAuthenticator {
        TokenAuthenticator {
            token: token.into(),
        }
    }

    /// The token is the file's content without surrounding whitespace; an empty or unreadable
    /// file is an error that names it.
    pub fn from_file(path: &Path) -> Result<TokenAuthenticator, String> {
        crate::ballista::auth::read_token_file(path, "--flight-sql-token-file")
            .map(TokenAuthenticator::new)
    }

    /// The secret a handshake presents, from `authorization: Basic base64(user:token)` or
    /// `authorization: Bearer token`, with the user name if any.
    fn presented(headers: &MetadataMap) -> Option<(Option<String>, String)> {
        let value = headers.get("authorization")?.to_str().ok()?;
        let (scheme, rest) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some((None, rest.trim().to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            return Some((Some(user.to_string()), password.to_string()));
        }
        None
    }
}

#[async_trait]
impl Authenticator for TokenAuthenticator {
    async fn authenticate(&self, headers: &MetadataMap) -> Result<Identity, Status> {
        match Self::presented(headers) {
            Some((user, secret))
                if crate::ballista::auth::same_secret(secret.as_bytes(), self.token.as_bytes()) =>
            {
                Ok(Identity::user(user.unwrap_or_else(|| "token".into())))
            }
            Some(_) => Err(Status::unauthenticated("the token is not the scheduler's")),
            None => Err(Status::unauthenticated(
                "this scheduler needs a token: send it as the password (Basic) or as a bearer token in the handshake",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[tokio::test]
    async fn only_the_token_gets_in() {
        let auth = TokenAuthenticator::new("s3cret");
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let ok = auth.authenticate(&headers(&basic("ann", "s3cret"))).await;
        assert_eq!(ok.unwrap(), Identity::user("ann"));
        assert!(auth.authenticate(&headers("Bearer s3cret")).await.is_ok());
        for bad in [
            basic("ann", "s3cre"),
            basic("ann", "s3cretX"),
            "Bearer no".into(),
        ] {
            let e = auth.authenticate(&headers(&bad)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let none = auth.authenticate(&MetadataMap::new()).await.unwrap_err();
        assert!(none.message().contains("needs a token"));
        assert!(!auth.allows_anonymous());
    }
}
