//! One error enum per boundary, each with a stable `code()` used as the result's `error.code`
//! and as a metric label, and a notion of permanent vs. retryable.

use thiserror::Error;

/// Bad input in a job. Always permanent: the job gets an error result and a dead-letter entry,
/// and is acknowledged at once (retrying cannot fix it).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum InputError {
    #[error("job field is not valid UTF-8 JSON: {0}")]
    InvalidJson(String),
    #[error("unsupported contract version {0} (this worker speaks v1)")]
    UnsupportedVersion(i64),
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("job has neither an `image` field nor `image_base64`")]
    MissingImage,
    #[error("image_base64 is not valid base64: {0}")]
    InvalidBase64(String),
    #[error("image cannot be decoded: {0}")]
    InvalidImage(String),
    #[error("image too large: {0}")]
    ImageTooLarge(String),
    #[error("invalid box: {0}")]
    InvalidBox(String),
}

impl InputError {
    /// Stable, documented error code (wire contract v1).
    pub fn code(&self) -> &'static str {
        match self {
            InputError::InvalidJson(_) => "invalid_json",
            InputError::UnsupportedVersion(_) => "unsupported_version",
            InputError::InvalidJob(_) => "invalid_job",
            InputError::MissingImage => "missing_image",
            InputError::InvalidBase64(_) => "invalid_base64",
            InputError::InvalidImage(_) => "invalid_image",
            InputError::ImageTooLarge(_) => "image_too_large",
            InputError::InvalidBox(_) => "invalid_box",
        }
    }
}

/// Every error code a result can carry, for documentation and tests.
pub const ERROR_CODES: &[&str] = &[
    "invalid_json",
    "unsupported_version",
    "invalid_job",
    "missing_image",
    "invalid_base64",
    "invalid_image",
    "image_too_large",
    "invalid_box",
    "inference_failed",
    "too_many_deliveries",
];

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
    /// Stable code, used as a metric label and in error results.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Load { .. } => "model_load",
            ModelError::Contract(_) => "model_contract",
            ModelError::Device(..) => "device_unusable",
            ModelError::OutOfMemory(_) => "out_of_memory",
            ModelError::Forward(_) => "inference_failed",
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

/// A failure talking to Redis. Always retryable: the worker reconnects and nothing that was not
/// published is acknowledged.
#[derive(Debug, Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis protocol: {0}")]
    Protocol(String),
}

impl QueueError {
    /// Stable code, used as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            QueueError::Redis(_) | QueueError::Pool(_) => "redis_unavailable",
            QueueError::Protocol(_) => "redis_protocol",
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
    fn oom_messages_are_recognised() {
        let e = ModelError::from_torch(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nstack".into(),
        );
        assert_eq!(e.code(), "out_of_memory");
        assert!(!e.to_string().contains("stack"));
        let e = ModelError::from_torch(
            "The following operation failed in the TorchScript interpreter.\nTraceback\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB".into(),
        );
        assert!(e.to_string().contains("Tried to allocate"), "{e}");
        let e = ModelError::from_torch("shape mismatch".into());
        assert_eq!(e.code(), "inference_failed");
    }

    #[test]
    fn every_input_error_code_is_documented() {
        let all = [
            InputError::InvalidJson(String::new()),
            InputError::UnsupportedVersion(2),
            InputError::InvalidJob(String::new()),
            InputError::MissingImage,
            InputError::InvalidBase64(String::new()),
            InputError::InvalidImage(String::new()),
            InputError::ImageTooLarge(String::new()),
            InputError::InvalidBox(String::new()),
        ];
        for e in all {
            assert!(ERROR_CODES.contains(&e.code()), "{}", e.code());
        }
    }
}
