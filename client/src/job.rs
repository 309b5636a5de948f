//! Jobs (wire contract v1, DESIGN §3): parsing what a producer sent, and building what a
//! producer sends.
//!
//! A job is one stream entry with a `job` field (UTF-8 JSON) and optionally an `image` field
//! (raw JPEG/PNG bytes, which wins over `image_base64`). Parsing is strict about types and
//! limits, and tolerant of unknown keys (so producers can add tracing fields). When a job is
//! rejected, whatever could be read of it (`job_id`, `video_id`, `frame_number`, `reply_to`, a
//! well-formed `video`) is still echoed in the error result.
//!
//! A frame of a tracked video (DESIGN §13) carries a [`Video`] object: the video's length, its
//! frame rate and where its tracked output goes. With it, `video_id` and `frame_number` are
//! required and the frame number must lie within the video.
//!
//! The JSON is read in one pass, typed as it goes: no JSON tree is built, strings without
//! escapes (the base64 image above all) are borrowed from the input, unknown keys are skipped
//! without allocating, and `boxes` stops collecting at `max_boxes`. Nesting depth and number
//! range are checked exactly as `serde_json` checks them when it builds a `Value`. The parser
//! lives in `parse`.
//!
//! The same pass can also say where each member of the job object is written
//! ([`Job::parse_with_layout`], [`JobLayout`]), so the worker can drop a job's image from what
//! it keeps of the entry by splicing the text instead of parsing it a second time.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use base64::Engine;
use serde::Serialize;

use crate::error::InputError;
use crate::VERSION;

mod parse;

/// The input limits parsing enforces (the worker's `[limits]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `job` field, bytes.
    pub max_job_bytes: usize,
    /// Most person boxes per job.
    pub max_boxes: usize,
}

impl Default for Limits {
    /// The defaults of `config/default.toml`: 32 boxes, and a `job` field as large as the base64
    /// text of the largest accepted image (`max_image_bytes` = 20 MiB: 4 × ⌈20971520 / 3⌉ =
    /// 27962028 bytes) plus 1 MiB for the rest of the JSON, 29010604 bytes in all.
    fn default() -> Self {
        Limits {
            max_job_bytes: 4 * 20_971_520usize.div_ceil(3) + (1 << 20),
            max_boxes: 32,
        }
    }
}

/// Optional heavy outputs a job can ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Include {
    /// The 6890 mesh vertices of each person.
    pub vertices: bool,
}

/// What a result echoes back of its job, and where it goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Echo {
    /// The job's `job_id`.
    pub job_id: Option<String>,
    /// The job's `video_id`.
    pub video_id: Option<String>,
    /// The job's `frame_number`.
    pub frame_number: Option<u64>,
    /// The job's `reply_to` stream.
    pub reply_to: Option<String>,
    /// The job's `video` object, when it is well-formed (whatever else is wrong with the job),
    /// so a rejected frame of a tracked video can still be counted for its video.
    pub video: Option<Video<'static>>,
}

/// The `video` object of a frame of a tracked video (DESIGN §13): every frame of the video
/// carries the same one. The worker records each answered frame for its video; once all
/// `frames` are recorded, the video is tracked and smoothed and its output written to the
/// video's output stream ([`crate::Keys::video_output`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Video<'a> {
    /// How many frames the video has (at least 1); frame numbers run from 0 to `frames - 1`.
    pub frames: u64,
    /// Frames per second (finite, above 0).
    pub fps: f64,
    /// The stream for the video's tracked output; `None` for the default,
    /// `<results stream>:video:<video_id>`. Same confinement rule as a job's `reply_to`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Cow<'a, str>>,
}

impl<'a> Video<'a> {
    /// A video of `frames` frames at `fps` frames per second, output on the default stream.
    pub fn new(frames: u64, fps: f64) -> Self {
        Video {
            frames,
            fps,
            reply_to: None,
        }
    }

    /// Sends the video's tracked output to `stream` instead of the default
    /// `<results stream>:video:<video_id>`.
    pub fn reply_to(mut self, stream: impl Into<Cow<'a, str>>) -> Self {
        self.reply_to = Some(stream.into());
        self
    }

    /// The same video object, owning its strings.
    pub fn into_owned(self) -> Video<'static> {
        Video {
            frames: self.frames,
            fps: self.fps,
            reply_to: self.reply_to.map(|r| Cow::Owned(r.into_owned())),
        }
    }
}

/// A job: parsed and validated (image still encoded), or being built by a producer.
#[derive(Debug, Clone, PartialEq)]
pub struct Job<'a> {
    /// Unique id; results are keyed by it.
    pub job_id: Cow<'a, str>,
    /// Echoed back in the result.
    pub video_id: Option<Cow<'a, str>>,
    /// Echoed back in the result.
    pub frame_number: Option<u64>,
    /// Base64 image; `None` after parsing when the entry carries a raw `image` field (it wins).
    pub image_base64: Option<Cow<'a, str>>,
    /// Person boxes `[x1, y1, x2, y2]` in pixels, unchecked against the image yet; empty means
    /// "find the people" (detector, or the whole frame).
    pub boxes: Vec<[f64; 4]>,
    /// Stream that receives the result; `None` for `{prefix}:results`.
    pub reply_to: Option<Cow<'a, str>>,
    /// Optional outputs asked for.
    pub include: Include,
    /// Set on every frame of a tracked video (DESIGN §13); `video_id` and `frame_number` are
    /// then set too.
    pub video: Option<Video<'a>>,
}

/// A rejected job: why, and what of it can still be echoed in the error result.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// What is wrong with the job.
    pub error: InputError,
    /// The well-typed, bounded fields that could be read.
    pub echo: Echo,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Where the members of a job object are written in its text, as [`Job::parse_with_layout`]
/// read them: enough to rewrite the job (drop its image, cut large values) by splicing slices
/// of the text, without reading it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobLayout {
    /// Length of the text it was read from, bytes: a layout fits that text only.
    pub len: usize,
    /// The object's members, in the order they are written (a repeated key as often as it is
    /// written).
    pub members: Vec<Member>,
}

/// One `"key": value` member of a job object, as byte ranges of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key as written, its quotes (and any escapes) included.
    pub key: Range<usize>,
    /// The value as written, from its first byte to its last (no whitespace around it).
    pub value: Range<usize>,
    /// The key unescaped, for a key written with escapes (else it is the text between the
    /// quotes, and nothing is copied).
    unescaped: Option<Box<str>>,
}

impl Member {
    /// The key, unescaped. `text` is the text the layout was read from.
    pub fn name<'t>(&'t self, text: &'t [u8]) -> &'t str {
        if let Some(k) = &self.unescaped {
            return k;
        }
        let inner = self.key.start + 1..self.key.end.saturating_sub(1);
        text.get(inner)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

impl<'a> Job<'a> {
    /// Parses the `job` field. `has_raw_image` says whether the entry carries an `image` field.
    /// On failure the error comes with whatever could be echoed.
    // The error is as large as the echo makes it; a job is larger still, so boxing the error
    // would not make the result any smaller.
    #[allow(clippy::result_large_err)]
    pub fn parse(
        raw: &'a [u8],
        has_raw_image: bool,
        limits: &Limits,
    ) -> Result<Job<'a>, ParseError> {
        Self::read(raw, has_raw_image, limits, false).0
    }

    /// [`Job::parse`], and in the same pass where each member of the job object is written in
    /// `raw` ([`JobLayout`]). The layout comes whenever `raw` is a JSON object, valid job or
    /// not, even one over `max_job_bytes` (a rejected job is rewritten for its dead letter
    /// too); it is `None` only when `raw` is not a JSON object.
    pub fn parse_with_layout(
        raw: &'a [u8],
        has_raw_image: bool,
        limits: &Limits,
    ) -> (Result<Job<'a>, ParseError>, Option<JobLayout>) {
        Self::read(raw, has_raw_image, limits, true)
    }

    fn read(
        raw: &'a [u8],
        has_raw_image: bool,
        limits: &Limits,
        layout: bool,
    ) -> (Result<Job<'a>, ParseError>, Option<JobLayout>) {
        let unreadable = |error| ParseError {
            error,
            echo: Echo::default(),
        };
        let oversized = (raw.len() > limits.max_job_bytes).then(|| {
            unreadable(InputError::InvalidJob(format!(
                "job field is {} bytes, the limit is {}",
                raw.len(),
                limits.max_job_bytes
            )))
        });
        if let (Some(e), false) = (&oversized, layout) {
            return (Err(e.clone()), None);
        }
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text,
            Err(e) => {
                let invalid = || unreadable(InputError::InvalidJson(e.to_string()));
                return (Err(oversized.unwrap_or_else(invalid)), None);
            }
        };
        let (fields, layout) = parse::read_fields(text, limits.max_boxes, layout);
        if let Some(e) = oversized {
            return (Err(e), layout);
        }
        let job = match fields {
            Ok(fields) => {
                let echo = fields.echo();
                fields
                    .validate(has_raw_image)
                    .map_err(|error| ParseError { error, echo })
            }
            Err(m) => Err(unreadable(InputError::InvalidJson(m))),
        };
        (job, layout)
    }

    /// What a result echoes of this job.
    pub fn echo(&self) -> Echo {
        Echo {
            job_id: Some(self.job_id.to_string()),
            video_id: self.video_id.as_deref().map(str::to_string),
            frame_number: self.frame_number,
            reply_to: self.reply_to.as_deref().map(str::to_string),
            video: self.video.clone().map(Video::into_owned),
        }
    }

    /// The same job, owning its strings.
    pub fn into_owned(self) -> Job<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        Job {
            job_id: own(self.job_id),
            video_id: self.video_id.map(own),
            frame_number: self.frame_number,
            image_base64: self.image_base64.map(own),
            boxes: self.boxes,
            reply_to: self.reply_to.map(own),
            include: self.include,
            video: self.video.map(Video::into_owned),
        }
    }

    /// A job with only its id: no image, no boxes, default reply stream, no extra outputs.
    pub fn new(job_id: impl Into<Cow<'a, str>>) -> Self {
        Job {
            job_id: job_id.into(),
            video_id: None,
            frame_number: None,
            image_base64: None,
            boxes: Vec::new(),
            reply_to: None,
            include: Include::default(),
            video: None,
        }
    }

    /// Sets the video and the frame's number in it.
    pub fn video(mut self, video_id: impl Into<Cow<'a, str>>, frame_number: u64) -> Self {
        self.video_id = Some(video_id.into());
        self.frame_number = Some(frame_number);
        self
    }

    /// Makes this a frame of a tracked video of `frames` frames at `fps` frames per second
    /// (DESIGN §13), its output on the default stream. Every frame of the video must say the
    /// same; set the video and frame number with [`Job::video`] too.
    pub fn tracked(self, frames: u64, fps: f64) -> Self {
        self.tracked_with(Video::new(frames, fps))
    }

    /// Makes this a frame of the tracked video `video` (for one with its own output stream:
    /// `Video::new(frames, fps).reply_to(stream)`).
    pub fn tracked_with(mut self, video: Video<'a>) -> Self {
        self.video = Some(video);
        self
    }

    /// Sets the person boxes `[x1, y1, x2, y2]` in pixels (empty: let the worker find people).
    pub fn boxes(mut self, boxes: Vec<[f64; 4]>) -> Self {
        self.boxes = boxes;
        self
    }

    /// Sends the result to `stream` instead of `{prefix}:results`.
    pub fn reply_to(mut self, stream: impl Into<Cow<'a, str>>) -> Self {
        self.reply_to = Some(stream.into());
        self
    }

    /// Asks for (or not) the mesh vertices of each person.
    pub fn vertices(mut self, yes: bool) -> Self {
        self.include.vertices = yes;
        self
    }

    /// Carries the image inside the JSON, as standard base64.
    pub fn image_base64(mut self, b64: impl Into<Cow<'a, str>>) -> Self {
        self.image_base64 = Some(b64.into());
        self
    }

    /// The `job` field: `{"v":1,"job_id":..}` plus every optional key that is set (an empty
    /// `boxes` and a false `vertices` are left out), `video` last.
    pub fn to_json(&self) -> String {
        self.wire(self.image_base64.as_deref()).to_json()
    }

    fn wire<'b>(&'b self, image_base64: Option<&'b str>) -> Wire<'b> {
        Wire {
            v: VERSION,
            job_id: &self.job_id,
            video_id: self.video_id.as_deref(),
            frame_number: self.frame_number,
            image_base64,
            boxes: &self.boxes,
            reply_to: self.reply_to.as_deref(),
            include: if self.include.vertices {
                &["vertices"]
            } else {
                &[]
            },
            video: self.video.as_ref(),
        }
    }
}

/// The JSON shape of a job, borrowed from a [`Job`].
#[derive(Serialize)]
struct Wire<'b> {
    v: i64,
    job_id: &'b str,
    #[serde(skip_serializing_if = "Option::is_none")]
    video_id: Option<&'b str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_base64: Option<&'b str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    boxes: &'b [[f64; 4]],
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'b str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    include: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<&'b Video<'b>>,
}

impl Wire<'_> {
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serialises")
    }
}

/// A job plus its image bytes, ready to become stream fields.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The job (its `image_base64` is only used when `image` is empty).
    pub job: Job<'static>,
    /// JPEG or PNG bytes.
    pub image: Vec<u8>,
}

impl Frame {
    /// A frame of `job` with the JPEG or PNG bytes `image`.
    pub fn new(job: Job<'static>, image: Vec<u8>) -> Self {
        Frame { job, image }
    }

    /// The stream fields of this job: the `job` JSON field and, when `raw`, an `image` field
    /// with the bytes (a third smaller than base64, and no base64 work on either side);
    /// otherwise the image goes inside the JSON as `image_base64`. A frame with no image bytes
    /// sends the job's own `image_base64`, if any, whatever `raw` says.
    pub fn fields(&self, raw: bool) -> Vec<(&'static str, Vec<u8>)> {
        if self.image.is_empty() && self.job.image_base64.is_some() {
            return vec![("job", self.job.to_json().into_bytes())];
        }
        if raw {
            vec![
                ("job", self.job.wire(None).to_json().into_bytes()),
                ("image", self.image.clone()),
            ]
        } else {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&self.image);
            vec![("job", self.job.wire(Some(&b64)).to_json().into_bytes())]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn built_jobs_parse_back_to_themselves() {
        let job = Job::new("v1:16")
            .video("v1", 16)
            .boxes(vec![[1.0, 2.5, 30.0, 40.0]])
            .reply_to("hmr2:results:me")
            .vertices(true)
            .image_base64("AQID");
        let json = job.to_json();
        assert!(json.starts_with(r#"{"v":1,"job_id":"v1:16","#), "{json}");
        let back = Job::parse(json.as_bytes(), false, &limits()).unwrap();
        assert_eq!(back, job);
        let bare = Job::new("a").to_json();
        assert_eq!(bare, r#"{"v":1,"job_id":"a"}"#);
    }

    #[test]
    fn a_tracked_frame_writes_its_video_and_parses_back() {
        let job = Job::new("clip-7:16")
            .video("clip-7", 16)
            .tracked(120, 29.97)
            .image_base64("AQID");
        assert_eq!(
            job.to_json(),
            r#"{"v":1,"job_id":"clip-7:16","video_id":"clip-7","frame_number":16,"image_base64":"AQID","video":{"frames":120,"fps":29.97}}"#
        );
        assert_eq!(
            Job::parse(job.to_json().as_bytes(), false, &limits()).unwrap(),
            job
        );
        let own = job.tracked_with(Video::new(2, 30.0).reply_to("hmr2:results:out"));
        let json = own.to_json();
        assert!(
            json.ends_with(r#""video":{"frames":2,"fps":30.0,"reply_to":"hmr2:results:out"}}"#),
            "{json}"
        );
        // Frame 16 of a video of 2 frames: built, but refused when read.
        let e = Job::parse(json.as_bytes(), false, &limits()).unwrap_err();
        assert_eq!(e.error.code(), crate::ErrorCode::InvalidJob);
        let fine = own.video("clip-7", 1);
        let text = fine.to_json();
        let back = Job::parse(text.as_bytes(), false, &limits()).unwrap();
        assert_eq!(back.clone().into_owned(), fine);
        assert_eq!(back.echo().video, fine.video);
    }

    #[test]
    fn frame_fields_follow_the_contract() {
        let job = Job::new("v:1")
            .video("v", 1)
            .boxes(vec![[0.0, 0.0, 10.0, 20.0]])
            .vertices(true);
        let f = Frame::new(job.clone(), vec![1, 2, 3]);
        let raw = f.fields(true);
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[1], ("image", vec![1, 2, 3]));
        assert_eq!(raw[0].0, "job");
        let parsed = Job::parse(&raw[0].1, true, &limits()).unwrap();
        assert_eq!(parsed, job);
        let b64 = f.fields(false);
        assert_eq!(b64.len(), 1);
        let parsed = Job::parse(&b64[0].1, false, &limits()).unwrap();
        assert_eq!(parsed.image_base64.as_deref(), Some("AQID"));
        assert_eq!(parsed, job.clone().image_base64("AQID"));
        // A frame that already holds base64 sends it as is.
        let pre = Frame::new(job.clone().image_base64("AAAA"), Vec::new());
        let fields = pre.fields(true);
        assert_eq!(fields.len(), 1);
        assert_eq!(
            Job::parse(&fields[0].1, false, &limits())
                .unwrap()
                .image_base64
                .as_deref(),
            Some("AAAA")
        );
    }
}
