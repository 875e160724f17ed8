//! The user pool (sign-up, sign-in, tokens) and identity pool (temporary
//! credentials) behind Cognito's APIs, in memory. These are what the Service
//! Health Dashboard's posting tool needed on 2020-11-25 and could not get.
//! Passwords are kept in plain text: this is a testbed's pool, seeded by flags.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cascade_core::{ServiceError, now_ms};
use parking_lot::Mutex;
use rand::Rng;

/// Longest username accepted (characters); keeps every access record small.
pub const MAX_USERNAME_CHARS: usize = 128;
/// Longest password accepted (characters).
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Tokens kept before expired ones are swept out.
const SWEEP_EVERY: usize = 1024;

/// A Cognito call's failure: a plain service error, or an authentication
/// failure (bad credentials, unknown or expired token).
#[derive(Debug, thiserror::Error)]
pub enum CognitoError {
    /// Invalid input, a duplicate user, and the like.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Wrong username/password, or a token that is unknown or expired.
    #[error("{0}")]
    NotAuthorized(String),
}

impl CognitoError {
    /// The gRPC code name, as written into access records.
    pub fn code_name(&self) -> &'static str {
        match self {
            Self::NotAuthorized(_) => "UNAUTHENTICATED",
            Self::Service(e) => match e {
                ServiceError::InvalidArgument(_) => "INVALID_ARGUMENT",
                ServiceError::NotFound(_) => "NOT_FOUND",
                ServiceError::AlreadyExists(_) => "ALREADY_EXISTS",
                ServiceError::Unavailable(_) => "UNAVAILABLE",
                ServiceError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
                ServiceError::Internal(_) => "INTERNAL",
                ServiceError::Upstream(_) => "UPSTREAM",
            },
        }
    }
}

/// The one mapping of Cognito failures to gRPC: authentication failures are
/// UNAUTHENTICATED (core's `ServiceError` has no such variant); everything
/// else goes through core's single `ServiceError` mapping.
impl From<CognitoError> for tonic::Status {
    fn from(e: CognitoError) -> Self {
        match e {
            CognitoError::NotAuthorized(m) => tonic::Status::unauthenticated(m),
            CognitoError::Service(e) => e.into(),
        }
    }
}

/// A signed-in session.
#[derive(Debug, Clone)]
struct Session {
    /// Who signed in.
    username: String,
    /// When the token stops being valid (monotonic clock).
    expires: Instant,
    /// The same moment on the wall clock, for the wire.
    expires_at_ms: i64,
}

/// A freshly issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The bearer token: 32 random hex characters.
    pub token: String,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Temporary AWS-style credentials from the identity pool.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// "ASIA" + 16 uppercase letters/digits, like STS temporary keys.
    pub access_key_id: String,
    /// 40 random letters/digits.
    pub secret_access_key: String,
    /// Random session token.
    pub session_token: String,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Users and live sessions.
#[derive(Debug)]
pub struct UserPool {
    /// username -> password.
    users: Mutex<HashMap<String, String>>,
    /// token -> session.
    tokens: Mutex<HashMap<String, Session>>,
    /// Wall-clock lifetime of tokens and credentials.
    token_ttl: Duration,
}

/// Checks a username: 1 to [`MAX_USERNAME_CHARS`] characters, no whitespace
/// or control characters.
pub fn validate_username(username: &str) -> Result<(), ServiceError> {
    if username.is_empty() {
        return Err(ServiceError::invalid(format!(
            "username: must not be empty (1 to {MAX_USERNAME_CHARS} characters)"
        )));
    }
    let n = username.chars().count();
    if n > MAX_USERNAME_CHARS {
        return Err(ServiceError::invalid(format!(
            "username: {n} characters, at most {MAX_USERNAME_CHARS} allowed"
        )));
    }
    if let Some(c) = username
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ServiceError::invalid(format!(
            "username: has {c:?}; whitespace and control characters are not allowed"
        )));
    }
    Ok(())
}

/// Checks a password: 1 to [`MAX_PASSWORD_CHARS`] characters.
pub fn validate_password(password: &str) -> Result<(), ServiceError> {
    if password.is_empty() {
        return Err(ServiceError::invalid(format!(
            "password: must not be empty (1 to {MAX_PASSWORD_CHARS} characters)"
        )));
    }
    let n = password.chars().count();
    if n > MAX_PASSWORD_CHARS {
        return Err(ServiceError::invalid(format!(
            "password: {n} characters, at most {MAX_PASSWORD_CHARS} allowed"
        )));
    }
    Ok(())
}

fn random_from(charset: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(charset[rng.random_range(0..charset.len())]))
        .collect()
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl UserPool {
    /// A pool whose tokens live `token_ttl` (wall time), seeded with `users`.
    pub fn new(token_ttl: Duration, users: &[(String, String)]) -> Result<Self, ServiceError> {
        let mut map = HashMap::new();
        for (u, p) in users {
            validate_username(u)?;
            validate_password(p)?;
            map.insert(u.clone(), p.clone());
        }
        Ok(Self {
            users: Mutex::new(map),
            tokens: Mutex::default(),
            token_ttl,
        })
    }

    /// Users in the pool.
    pub fn user_count(&self) -> usize {
        self.users.lock().len()
    }

    /// Live (possibly expired, not yet swept) sessions.
    pub fn session_count(&self) -> usize {
        self.tokens.lock().len()
    }

    /// Adds a user; ALREADY_EXISTS if the name is taken.
    pub fn sign_up(&self, username: &str, password: &str) -> Result<(), CognitoError> {
        validate_username(username)?;
        validate_password(password)?;
        let mut users = self.users.lock();
        if users.contains_key(username) {
            return Err(ServiceError::AlreadyExists(format!(
                "username: {username:?} is already registered"
            ))
            .into());
        }
        users.insert(username.to_owned(), password.to_owned());
        Ok(())
    }

    /// Checks the password and issues a token.
    pub fn sign_in(&self, username: &str, password: &str) -> Result<Issued, CognitoError> {
        validate_username(username)?;
        validate_password(password)?;
        let ok = self
            .users
            .lock()
            .get(username)
            .is_some_and(|p| p == password);
        if !ok {
            // One message for both cases, as Cognito: do not reveal which users exist.
            return Err(CognitoError::NotAuthorized(
                "incorrect username or password".into(),
            ));
        }
        let token = format!("{:032x}", rand::rng().random::<u128>());
        let expires_at_ms = now_ms() + self.token_ttl.as_millis() as i64;
        let session = Session {
            username: username.to_owned(),
            expires: Instant::now() + self.token_ttl,
            expires_at_ms,
        };
        let mut tokens = self.tokens.lock();
        if tokens.len() % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = Instant::now();
            tokens.retain(|_, s| s.expires > now);
        }
        tokens.insert(token.clone(), session);
        Ok(Issued {
            token,
            expires_at_ms,
        })
    }

    /// The user and expiry of a live token.
    pub fn validate(&self, token: &str) -> Result<(String, i64), CognitoError> {
        if token.is_empty() {
            return Err(
                ServiceError::invalid("token: must not be empty; get one from SignIn").into(),
            );
        }
        let mut tokens = self.tokens.lock();
        let Some(session) = tokens.get(token).cloned() else {
            return Err(CognitoError::NotAuthorized(
                "token: unknown; sign in again".into(),
            ));
        };
        if session.expires <= Instant::now() {
            tokens.remove(token);
            return Err(CognitoError::NotAuthorized(format!(
                "token: expired at {} ms; sign in again",
                session.expires_at_ms
            )));
        }
        Ok((session.username, session.expires_at_ms))
    }

    /// Temporary credentials for the holder of a live token.
    pub fn credentials(&self, token: &str) -> Result<(String, Credentials), CognitoError> {
        let (username, _) = self.validate(token)?;
        let creds = Credentials {
            access_key_id: format!("ASIA{}", random_from(UPPER_DIGITS, 16)),
            secret_access_key: random_from(ALNUM, 40),
            session_token: random_from(ALNUM, 128),
            expires_at_ms: now_ms() + self.token_ttl.as_millis() as i64,
        };
        Ok((username, creds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(ttl: Duration) -> UserPool {
        UserPool::new(ttl, &[("operator".into(), "operator-password".into())])
            .expect("the seed is valid")
    }

    #[test]
    fn sign_in_validate_and_credentials() {
        let p = pool(Duration::from_secs(60));
        let issued = p
            .sign_in("operator", "operator-password")
            .expect("good credentials sign in");
        assert_eq!(issued.token.len(), 32);
        assert!(issued.token.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(issued.expires_at_ms > now_ms());
        let (user, exp) = p.validate(&issued.token).expect("a fresh token is valid");
        assert_eq!((user.as_str(), exp), ("operator", issued.expires_at_ms));
        let (user, c) = p
            .credentials(&issued.token)
            .expect("a fresh token gets credentials");
        assert_eq!(user, "operator");
        assert!(c.access_key_id.starts_with("ASIA") && c.access_key_id.len() == 20);
        assert_eq!(c.secret_access_key.len(), 40);
    }

    #[test]
    fn bad_input_and_bad_credentials() {
        let p = pool(Duration::from_secs(60));
        assert!(matches!(
            p.sign_in("", "x"),
            Err(CognitoError::Service(ServiceError::InvalidArgument(m))) if m.contains("username")
        ));
        assert!(matches!(
            p.sign_in("operator", ""),
            Err(CognitoError::Service(ServiceError::InvalidArgument(m))) if m.contains("password")
        ));
        assert!(matches!(
            p.sign_in("operator", "wrong"),
            Err(CognitoError::NotAuthorized(_))
        ));
        assert!(matches!(
            p.sign_in("nobody", "x"),
            Err(CognitoError::NotAuthorized(_))
        ));
        assert!(matches!(
            p.validate("0123456789abcdef0123456789abcdef"),
            Err(CognitoError::NotAuthorized(_))
        ));
        assert!(matches!(
            p.validate(""),
            Err(CognitoError::Service(ServiceError::InvalidArgument(_)))
        ));
        assert!(matches!(
            p.sign_up("operator", "again"),
            Err(CognitoError::Service(ServiceError::AlreadyExists(_)))
        ));
        assert!(p.sign_up("a b", "x").is_err());
        assert!(p.sign_up(&"u".repeat(MAX_USERNAME_CHARS + 1), "x").is_err());
        assert!(p.sign_up("new-user", "pw").is_ok());
        assert!(p.sign_in("new-user", "pw").is_ok());
        let status: tonic::Status = CognitoError::NotAuthorized("x".into()).into();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let p = pool(Duration::ZERO);
        let issued = p
            .sign_in("operator", "operator-password")
            .expect("good credentials sign in");
        assert!(matches!(
            p.validate(&issued.token),
            Err(CognitoError::NotAuthorized(m)) if m.contains("expired")
        ));
        assert!(p.credentials(&issued.token).is_err());
    }
}
