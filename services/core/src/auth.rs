//! The run's token: what makes a control call a mutation allowed.
//!
//! A supervisor makes one random token per run (or takes `CASCADE_TOKEN`).
//! It keeps it in the run's `supervisor.json` (mode 0600), hands it to every
//! process it starts in the environment (`CASCADE_CONTROL_TOKEN`, never on
//! the command line where `ps` shows it), and sends it with its own control
//! calls. Mutating RPCs (the supervisor's, and a service's `Control`
//! `Configure`/`InjectFault`/`ClearFault`) then need it as
//! `authorization: Bearer <token>`; health and read-only status stay open.
//! A process started without a token (a service run by hand, an in-process
//! test) accepts mutations from anyone, as before.

use std::sync::OnceLock;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The environment variable a supervisor passes its token to services in.
pub const SERVICE_TOKEN_ENV: &str = "CASCADE_CONTROL_TOKEN";

/// The environment variable a user sets to choose the run's token (the
/// supervisor) or to send it (the CLI, e.g. in compose mode).
pub const USER_TOKEN_ENV: &str = "CASCADE_TOKEN";

const HEADER: &str = "authorization";

/// A fresh token: 32 random bytes from the thread's CSPRNG, hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token this service process demands, read once from
/// [`SERVICE_TOKEN_ENV`]; `None` when it was started without one.
pub fn service_token() -> Option<&'static str> {
    static TOKEN: OnceLock<Option<String>> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            std::env::var(SERVICE_TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty())
        })
        .as_deref()
}

/// Checks that `req` carries `expected` (if any); a missing or wrong token is
/// refused `UNAUTHENTICATED` and logged, naming the call. Compared in
/// constant time.
pub fn check<T>(req: &Request<T>, expected: Option<&str>, call: &str) -> Result<(), Status> {
    let header = req.metadata().get(HEADER).and_then(|v| v.to_str().ok());
    check_header(header, expected, call).map_err(Status::unauthenticated)
}

/// Checks an `authorization` header value (`Bearer <token>`) against
/// `expected` (if any), in constant time; the refusal says what was wrong
/// and where the token is found, and is logged.
pub fn check_header(
    header: Option<&str>,
    expected: Option<&str>,
    call: &str,
) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = header.and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())));
    if ok {
        return Ok(());
    }
    let why = if given.is_some() {
        "a wrong token"
    } else {
        "no token"
    };
    tracing::warn!(call, why, "refused an unauthenticated control call");
    Err(format!(
        "{call} changes the run and needs the run's token ({why} given): the cascade CLI \
         reads it from the run's supervisor.json, or from ${USER_TOKEN_ENV}"
    ))
}

/// Adds `token` (if any) to an outgoing request.
pub fn attach<T>(mut req: Request<T>, token: Option<&str>) -> Request<T> {
    if let Some(t) = token
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
    {
        req.metadata_mut().insert(HEADER, v);
    }
    req
}

/// A tonic interceptor that attaches a token to every call of a client.
#[derive(Debug, Clone, Default)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        Ok(attach(req, self.0.as_deref()))
    }
}

/// The token this process sends with its control calls to the services (a
/// supervisor sets it once it has made the run's token).
static OUTGOING: parking_lot::RwLock<Option<String>> = parking_lot::RwLock::new(None);

/// Sets the token this process's [`control`] clients send.
pub fn set_outgoing(token: &str) {
    *OUTGOING.write() = Some(token.to_owned());
}

/// A `Control` client for a service that sends this process's token.
pub fn control(
    ch: tonic::transport::Channel,
) -> cascade_proto::control::control_client::ControlClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    cascade_proto::control::control_client::ControlClient::with_interceptor(
        ch,
        Bearer(OUTGOING.read().clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_hex() {
        let a = generate();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, generate());
    }

    #[test]
    fn only_the_right_token_passes() {
        let t = generate();
        let with = |tok: Option<&str>| attach(Request::new(()), tok);
        assert!(check(&with(Some(&t)), Some(&t), "Configure").is_ok());
        for (req, why) in [
            (with(None), "no token"),
            (with(Some("nope")), "a wrong token"),
            (with(Some(&t[..63])), "a wrong token"),
        ] {
            let e = check(&req, Some(&t), "Configure").expect_err(why);
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(e.message().contains(why), "{}", e.message());
            assert!(e.message().starts_with("Configure "), "{}", e.message());
        }
        // Without a token of its own, a process accepts anyone.
        assert!(check(&with(None), None, "Configure").is_ok());
    }
}
