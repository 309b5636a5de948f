//! The closed set of error codes a result can carry, and the input errors that map onto them.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A stable, documented error code (wire contract v1, the closed set of DESIGN §3): the
/// result's `error.code`. A frame the model fails on is not answered with an error: it stays
/// pending, is retried, and ends as `too_many_deliveries` if it never succeeds. Serialised in snake case (`invalid_json`, ...).
///
/// The worker writes only the codes of [`ErrorCode::ALL`]. A reader may meet a code a newer
/// worker added: it reads as [`ErrorCode::Other`] with the code as written, and serialises back
/// to the same string, so an older reader neither fails on it nor loses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    /// The `job` field is not UTF-8 JSON, or not an object.
    InvalidJson,
    /// `v` names a contract version other than 1.
    UnsupportedVersion,
    /// A field has the wrong type or size, or `include` names an unknown output.
    InvalidJob,
    /// Neither an `image` field nor `image_base64`.
    MissingImage,
    /// `image_base64` is not valid base64.
    InvalidBase64,
    /// The image bytes are not a decodable JPEG or PNG.
    InvalidImage,
    /// The image exceeds the worker's byte or pixel limits.
    ImageTooLarge,
    /// `boxes` is malformed, too long, or a box does not fit the image.
    InvalidBox,
    /// The job was delivered more often than `queue.max_deliveries` and dead-lettered.
    TooManyDeliveries,
    /// A code this version of the contract does not know, as written (never one of
    /// [`ErrorCode::ALL`]'s names: [`ErrorCode::from_wire`] reads those as themselves).
    Other(String),
}

impl ErrorCode {
    /// Every code, in the order of the contract's documentation.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidJob,
        ErrorCode::MissingImage,
        ErrorCode::InvalidBase64,
        ErrorCode::InvalidImage,
        ErrorCode::ImageTooLarge,
        ErrorCode::InvalidBox,
        ErrorCode::TooManyDeliveries,
    ];

    /// The code as it appears on the wire (`"invalid_json"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidJob => "invalid_job",
            ErrorCode::MissingImage => "missing_image",
            ErrorCode::InvalidBase64 => "invalid_base64",
            ErrorCode::InvalidImage => "invalid_image",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::InvalidBox => "invalid_box",
            ErrorCode::TooManyDeliveries => "too_many_deliveries",
            ErrorCode::Other(code) => code,
        }
    }

    /// The code whose wire name is `code`: one of [`ErrorCode::ALL`], else [`ErrorCode::Other`].
    pub fn from_wire(code: &str) -> Self {
        ErrorCode::from(code.to_string())
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or(ErrorCode::Other(code))
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Other(code) => code,
            known => known.as_str().to_string(),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The contract's closed set (the codes a worker writes): a string, one of [`ErrorCode::ALL`].
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(ErrorCode::as_str).collect();
        schemars::json_schema!({
            "title": "Error code",
            "description": "Why a job failed, one of a closed set. Bad input (answered at once, never retried, copied to the dead-letter stream): `invalid_json` (the `job` field is not UTF-8 JSON, or not an object), `unsupported_version` (`v` is not 1), `invalid_job` (a field has the wrong type or size, an unknown `include` item, a `reply_to` outside the job's results stream, a `video` the job does not fit), `missing_image` (neither an `image` field nor `image_base64`), `invalid_base64`, `invalid_image` (not a decodable JPEG or PNG), `image_too_large` (over the worker's byte or pixel limits), `invalid_box` (`boxes` malformed, too many, or a box outside the image). `too_many_deliveries`: the job was delivered more often than `queue.max_deliveries` (it crashed or ran out of memory every time) and was dead-lettered. A reader should expect codes a newer worker may add.",
            "type": "string",
            "enum": codes,
        })
    }
}

/// Compares with the wire name, so `code == "invalid_json"` reads as it should.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Compares with the wire name.
impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Bad input in a job. Always permanent: the job gets an error result and a dead-letter entry,
/// and is acknowledged at once (retrying cannot fix it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The `job` field is not UTF-8 JSON (or not an object).
    #[error("job field is not valid UTF-8 JSON: {0}")]
    InvalidJson(String),
    /// `v` is an integer other than 1.
    #[error("unsupported contract version {0} (this worker speaks v1)")]
    UnsupportedVersion(i64),
    /// A field has the wrong type or size.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// Neither an `image` field nor `image_base64`.
    #[error("job has neither an `image` field nor `image_base64`")]
    MissingImage,
    /// `image_base64` does not decode.
    #[error("image_base64 is not valid base64: {0}")]
    InvalidBase64(String),
    /// The image bytes do not decode.
    #[error("image cannot be decoded: {0}")]
    InvalidImage(String),
    /// The image exceeds a limit.
    #[error("image too large: {0}")]
    ImageTooLarge(String),
    /// `boxes`, or one box, is invalid.
    #[error("invalid box: {0}")]
    InvalidBox(String),
}

impl InputError {
    /// The stable error code of this error (wire contract v1).
    pub fn code(&self) -> ErrorCode {
        match self {
            InputError::InvalidJson(_) => ErrorCode::InvalidJson,
            InputError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            InputError::InvalidJob(_) => ErrorCode::InvalidJob,
            InputError::MissingImage => ErrorCode::MissingImage,
            InputError::InvalidBase64(_) => ErrorCode::InvalidBase64,
            InputError::InvalidImage(_) => ErrorCode::InvalidImage,
            InputError::ImageTooLarge(_) => ErrorCode::ImageTooLarge,
            InputError::InvalidBox(_) => ErrorCode::InvalidBox,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_as_its_wire_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
        let names: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn an_unknown_code_is_kept_as_written_and_written_back_the_same() {
        let back: ErrorCode = serde_json::from_str("\"gpu_on_fire\"").unwrap();
        assert_eq!(back, ErrorCode::Other("gpu_on_fire".into()));
        assert_eq!(back, "gpu_on_fire");
        assert_eq!(serde_json::to_string(&back).unwrap(), "\"gpu_on_fire\"");
        assert_eq!(ErrorCode::from_wire("invalid_box"), ErrorCode::InvalidBox);
        assert_eq!(ErrorCode::from_wire(""), ErrorCode::Other(String::new()));
        assert!(!ErrorCode::ALL.contains(&back));
        assert!(serde_json::from_str::<ErrorCode>("3").is_err());
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
            assert!(ErrorCode::ALL.contains(&e.code()), "{}", e.code());
        }
    }
}
