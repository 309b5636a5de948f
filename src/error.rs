//! One error enum per boundary. Bad input is the wire contract's [`InputError`]; Redis errors
//! know whether retrying can help ([`QueueError::is_permanent`]).

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

/// A failure talking to Redis: transient (Redis away, loading, failing over, out of memory)
/// or permanent (the command can never succeed as sent); see [`QueueError::is_permanent`].
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

/// Server error codes that say "not now": the same command can succeed later.
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
    "MISCONF",
    "NOSCRIPT",
];

impl QueueError {
    /// A stable snake_case name of the variant, for a metric label and a log field (see
    /// [`ModelError::code`]); whether it is permanent is [`QueueError::is_permanent`].
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::Redis(_) => "redis",
            QueueError::Pool(_) => "redis_pool",
        }
    }

    /// True when retrying the same command cannot help: an error reply from Redis about the
    /// command itself (NOPERM, WRONGTYPE, CROSSSLOT, MOVED, a script error, an `ERR` such as an
    /// XADD id below the stream's top), or a reply this worker cannot read. Connection
    /// failures, timeouts and the "not now" replies (LOADING, BUSY, OOM, READONLY, ...) are
    /// transient.
    pub fn is_permanent(&self) -> bool {
        let QueueError::Redis(e) = self else {
            return false;
        };
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            return false;
        }
        match e.code() {
            Some("ERR") => !e.to_string().contains("max number of clients"),
            Some(code) => !TRANSIENT_CODES.contains(&code),
            None => matches!(
                e.kind(),
                redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
            ),
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
    fn redis_errors_are_permanent_or_transient() {
        for permanent in [
            "-NOPERM User w has no permissions to run the 'xadd' command",
            "-WRONGTYPE Operation against a key holding the wrong kind of value",
            "-CROSSSLOT Keys in request don't hash to the same slot",
            "-MOVED 3999 127.0.0.1:6381",
            "-ERR The ID specified in XADD is equal or smaller than the target stream top item",
            "-ERR user_script:1: Script attempted to access nonexistent global variable",
        ] {
            assert!(reply(permanent).is_permanent(), "{permanent}");
        }
        for transient in [
            "-LOADING Redis is loading the dataset in memory",
            "-OOM command not allowed when used memory > 'maxmemory'.",
            "-READONLY You can't write against a read only replica.",
            "-BUSY Redis is busy running a script.",
            "-TRYAGAIN Multiple keys request during rehashing of slot",
            "-CLUSTERDOWN The cluster is down",
            "-ERR max number of clients reached",
        ] {
            assert!(!reply(transient).is_permanent(), "{transient}");
        }
        let io: QueueError =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
                .into();
        assert!(!io.is_permanent());
        assert!(!QueueError::Pool("timed out".into()).is_permanent());
        let unreadable: QueueError =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a stream"))
                .into();
        assert!(unreadable.is_permanent());
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
