//! The built-in functions an invocation can run, and the validation of an
//! Invoke request. `hash` is CPU-bound work; `echo` is the cheapest possible
//! function, so any refusal of it comes from the host, not the code.

use cascade_core::ServiceError;
use md5::{Digest, Md5};

/// Largest payload an invocation accepts (AWS's asynchronous-invoke limit).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Largest `rounds` of `hash`.
pub const MAX_HASH_ROUNDS: u32 = 5_000_000;

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Returns the payload unchanged.
    Echo,
    /// `rounds` rounds of MD5 over the running digest, starting from the payload.
    Hash {
        /// Rounds of MD5 (1..=MAX_HASH_ROUNDS).
        rounds: u32,
    },
}

/// Every function name, for NOT_FOUND messages.
pub const FUNCTION_NAMES: [&str; 2] = ["echo", "hash"];

impl Function {
    /// Validates an Invoke request's function, payload and rounds.
    pub fn parse(name: &str, payload_len: usize, rounds: u32) -> Result<Self, ServiceError> {
        let function = match name {
            "echo" => Self::Echo,
            "hash" => {
                if !(1..=MAX_HASH_ROUNDS).contains(&rounds) {
                    return Err(ServiceError::invalid(format!(
                        "rounds: {rounds} is out of range; function \"hash\" takes 1..={MAX_HASH_ROUNDS} rounds"
                    )));
                }
                Self::Hash { rounds }
            }
            other => {
                return Err(ServiceError::not_found(format!(
                    "function_name: function {other:?} not found; valid functions are {}",
                    FUNCTION_NAMES.join(", ")
                )));
            }
        };
        if payload_len > MAX_PAYLOAD_BYTES {
            return Err(ServiceError::invalid(format!(
                "payload: {payload_len} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes (256 KiB)"
            )));
        }
        Ok(function)
    }

    /// The function's name, as in requests and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Hash { .. } => "hash",
        }
    }

    /// Whether it is CPU-bound (run off the async workers).
    pub fn is_cpu_bound(self) -> bool {
        matches!(self, Self::Hash { .. })
    }

    /// Runs the function on `payload`.
    pub fn run(self, payload: Vec<u8>) -> Vec<u8> {
        match self {
            Self::Echo => payload,
            Self::Hash { rounds } => {
                let mut digest = Md5::digest(&payload);
                for _ in 1..rounds {
                    digest = Md5::digest(digest);
                }
                digest.to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hash_is_iterated_md5_from_the_payload() {
        let one = Function::Hash { rounds: 1 }.run(b"abc".to_vec());
        assert_eq!(hex(&one), "900150983cd24fb0d6963f7d28e17f72");
        let two = Function::Hash { rounds: 2 }.run(b"abc".to_vec());
        assert_eq!(two, Md5::digest(&one).to_vec());
    }

    #[test]
    fn echo_returns_the_payload() {
        assert_eq!(Function::Echo.run(b"hi".to_vec()), b"hi");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e = Function::parse("resize", 0, 0).expect_err("unknown");
        assert!(
            matches!(&e, ServiceError::NotFound(m) if m.contains("echo, hash")),
            "{e}"
        );
        for rounds in [0, MAX_HASH_ROUNDS + 1] {
            let e = Function::parse("hash", 0, rounds).expect_err("rounds");
            assert!(
                matches!(&e, ServiceError::InvalidArgument(m) if m.starts_with("rounds:")),
                "{e}"
            );
        }
        let e = Function::parse("echo", MAX_PAYLOAD_BYTES + 1, 0).expect_err("big");
        assert!(
            matches!(&e, ServiceError::InvalidArgument(m) if m.starts_with("payload:")),
            "{e}"
        );
        assert_eq!(
            Function::parse("echo", MAX_PAYLOAD_BYTES, 7).ok(),
            Some(Function::Echo)
        );
        assert_eq!(
            Function::parse("hash", 1, MAX_HASH_ROUNDS).ok(),
            Some(Function::Hash {
                rounds: MAX_HASH_ROUNDS
            })
        );
    }
}
