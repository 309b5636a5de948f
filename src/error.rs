//! One error enum per boundary. Bad input is the wire contract's [`InputError`]; Redis errors
//! are named by the server's code for metrics ([`QueueError::server_code`]).

use thiserror::Error;

/// Bad input in a job: part of the wire contract, defined with it in `hmr2-client`. Always
/// permanent: the job gets an error result and a dead-letter entry, and is acknowledged at once.
pub use hmr2_client::{ErrorCode, InputError};

/// A failure of the model or the device.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error("model does not match the worker's contract: {0}")]
    Contract(String),
    #[error("device {0} is not usable: {1}")]
    Device(String, String),
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    #[error("forward pass failed: {0}")]
    Forward(String),
    #[error("inference thread stopped")]
    Stopped,
}

impl ModelError {
    /// A stable snake_case name of the variant, for a metric label and a log field: it never
    /// changes with the message, and a renamed or new variant gets a new code, never an old
    /// one's.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Load { .. } => "model_load",
            ModelError::Contract(_) => "model_contract",
            ModelError::Device(..) => "device_unusable",
            ModelError::OutOfMemory(_) => "out_of_memory",
            ModelError::Forward(_) => "forward_failed",
            ModelError::Stopped => "inference_stopped",
        }
    }

    /// Classify a libtorch error message: CUDA's caching allocator raises
    /// "CUDA out of memory. Tried to allocate ..." (and "out of memory" from other backends).
    pub fn from_torch(message: String) -> Self {
        if is_oom_message(&message) {
            // TorchScript puts its own line first; keep the allocator's line.
            let line = message
                .lines()
                .find(|l| is_oom_message(l))
                .map(|l| l.trim().chars().take(300).collect())
                .unwrap_or_else(|| first_line(&message));
            ModelError::OutOfMemory(line)
        } else {
            ModelError::Forward(first_line(&message))
        }
    }
}

/// True for the error texts accelerators raise when they run out of memory.
pub fn is_oom_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("outofmemoryerror")
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// A failure talking to Redis. Every one is retried with backoff by the worker's steps: the
/// cases that are a job's own fault (a `reply_to` that cannot take its result) are answers of
/// the scripts, not errors, and the rest are faults of Redis or of its configuration that an
/// operator can mend while the job waits. [`QueueError::server_code`] names it for a metric.
#[derive(Debug, Error)]
pub enum QueueError {
    #[error("redis: {}", capped(&.0.to_string()))]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {}", capped(.0))]
    Pool(String),
}

/// The most characters of an error message that reach a log line: a reply quoted in an error
/// can be a whole frame.
pub const MAX_LOGGED_CHARS: usize = 300;

/// `s`, cut to [`MAX_LOGGED_CHARS`] characters with a note of how long it was.
pub(crate) fn capped(s: &str) -> String {
    if s.chars().count() <= MAX_LOGGED_CHARS {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX_LOGGED_CHARS).collect();
    format!("{head}… ({} bytes in all)", s.len())
}

/// The server error codes a metric label names as they are; any other is `other`.
const SERVER_CODES: &[&str] = &[
    "ERR",
    "OOM",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
    "NOGROUP",
    "WRONGTYPE",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "CROSSSLOT",
    "MOVED",
    "ASK",
    "READONLY",
    "NOREPLICAS",
    "MISCONF",
    "NOSCRIPT",
    "EXECABORT",
];

impl QueueError {
    /// A stable snake_case name of the variant, for a metric label and a log field (see
    /// [`ModelError::code`]); the server's own code is [`QueueError::server_code`].
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::Redis(_) => "redis",
            QueueError::Pool(_) => "redis_pool",
        }
    }

    /// What went wrong, as a closed set for the `code` label of `hmr2_redis_errors_total`: the
    /// server's error code (`OOM`, `NOPERM`, `NOGROUP`, `ERR`, ...; `other` for one not in the
    /// set), or `io`, `timeout`, `pool`, `parse` for failures on this side.
    pub fn server_code(&self) -> &'static str {
        let QueueError::Redis(e) = self else {
            return "pool";
        };
        if e.is_timeout() {
            return "timeout";
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            return "io";
        }
        if let Some(code) = e.code() {
            // A command an ACL denies inside a script comes back as a plain ERR.
            if code == "ERR"
                && e.to_string()
                    .contains("user executing the script can't run")
            {
                return "NOPERM";
            }
            return SERVER_CODES
                .iter()
                .find(|c| **c == code)
                .copied()
                .unwrap_or("other");
        }
        match e.kind() {
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => "parse",
            redis::ErrorKind::AuthenticationFailed => "WRONGPASS",
            _ => "other",
        }
    }

    /// What the error means for an operator, in a few words, for the log line that goes with
    /// the server's own message.
    pub fn meaning(&self) -> &'static str {
        match self.server_code() {
            "io" | "timeout" | "pool" => "redis unavailable",
            "NOPERM" => {
                "redis denies this worker's user a command or key (ACL): a permission problem"
            }
            "NOAUTH" | "WRONGPASS" => "redis refuses this worker's credentials",
            "OOM" => "redis is out of memory (maxmemory)",
            "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "MOVED" | "ASK"
            | "READONLY" | "NOREPLICAS" | "MISCONF" => "redis cannot serve this now",
            "NOGROUP" => "the consumer group is gone",
            "parse" => "an unexpected reply from redis",
            _ => "redis refused a command",
        }
    }
}

/// Invalid configuration, reported once at start-up.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(String),
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_error_message_carries_a_whole_payload_into_a_log_line() {
        let payload = "QUJD".repeat(50_000);
        let e: QueueError = redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "response was",
            payload.clone(),
        ))
        .into();
        let shown = e.to_string();
        assert!(shown.len() < 400, "{} characters logged", shown.len());
        assert!(shown.contains("bytes in all"));
        assert_eq!(capped("short"), "short");
    }

    fn reply(raw: &str) -> QueueError {
        let v = redis::parse_redis_value(format!("{raw}\r\n").as_bytes()).unwrap();
        v.extract_error().unwrap_err().into()
    }

    #[test]
    fn redis_errors_are_named_by_the_servers_code_and_explained() {
        for (raw, code, meaning) in [
            (
                "-NOPERM User w has no permissions to run the 'xreadgroup' command",
                "NOPERM",
                "permission problem",
            ),
            (
                "-OOM command not allowed when used memory > 'maxmemory'.",
                "OOM",
                "out of memory",
            ),
            ("-NOGROUP No such key 'k' or consumer group 'g'", "NOGROUP", "group is gone"),
            (
                "-WRONGTYPE Operation against a key holding the wrong kind of value",
                "WRONGTYPE",
                "refused a command",
            ),
            ("-ERR max number of clients reached", "ERR", "refused a command"),
            (
                "-ERR The user executing the script can't run this command or subcommand script: 8a8b, on @user_script:56.",
                "NOPERM",
                "permission problem",
            ),
            ("-LOADING Redis is loading the dataset in memory", "LOADING", "cannot serve this now"),
            ("-MOVED 3999 127.0.0.1:6381", "MOVED", "cannot serve this now"),
            ("-FUTURECODE something new", "other", "refused a command"),
        ] {
            let e = reply(raw);
            assert_eq!(e.server_code(), code, "{raw}");
            assert!(e.meaning().contains(meaning), "{raw}: {}", e.meaning());
        }
        let io: QueueError =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
                .into();
        assert_eq!(io.server_code(), "io");
        assert_eq!(io.meaning(), "redis unavailable");
        assert_eq!(QueueError::Pool("timed out".into()).server_code(), "pool");
        let unreadable: QueueError =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a stream"))
                .into();
        assert_eq!(unreadable.server_code(), "parse");
    }

    #[test]
    fn error_codes_are_distinct_and_snake_case() {
        let redis = redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "r"));
        let codes = [
            ModelError::Load {
                path: "m.pt".into(),
                message: "missing".into(),
            }
            .code(),
            ModelError::Contract("c".into()).code(),
            ModelError::Device("cuda:0".into(), "busy".into()).code(),
            ModelError::OutOfMemory("o".into()).code(),
            ModelError::Forward("f".into()).code(),
            ModelError::Stopped.code(),
            QueueError::Redis(redis).code(),
            QueueError::Pool("p".into()).code(),
        ];
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len(), "{codes:?}");
        for c in codes {
            let snake = !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase())
                && !c.ends_with('_')
                && !c.contains("__")
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            assert!(snake, "{c:?} is not snake_case");
        }
    }

    #[test]
    fn oom_messages_are_recognised() {
        let e = ModelError::from_torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nstack".into(),
        );
        assert!(matches!(e, ModelError::OutOfMemory(_)));
        assert!(!e.to_string().contains("stack"));
        let e = ModelError::from_torch(
            "The following operation failed in the TorchScript interpreter.\nTraceback\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB".into(),
        );
        assert!(e.to_string().contains("Tried to allocate"), "{e}");
        let e = ModelError::from_torch("shape mismatch".into());
        assert!(matches!(e, ModelError::Forward(_)));
    }
}
