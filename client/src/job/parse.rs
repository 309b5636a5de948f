//! Parsing the `job` JSON: one typed pass with serde, no JSON tree (see the parent module).
//!
//! [`read_fields`] reads the known keys into [`Fields`] (each value typed only as far as the
//! contract needs, unknown ones skipped through [`Skip`]; the `video` object read the same way
//! by [`VideoSeed`]); [`Fields::validate`] then checks them in the contract's order and builds
//! the [`Job`].
//!
//! The same pass can record the object's [`JobLayout`]: each key is read as a `RawValue`
//! borrowed from the text, which gives where it is written; each value lies between its key's
//! colon and the comma before the next key (or the object's closing brace). Values are still
//! read by the typed seeds, so the depth and number checks stay serde_json's own.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Echo, Include, Job, JobLayout, Member, Video};
use crate::error::InputError;
use crate::{MAX_ID_BYTES, VERSION};

/// Reads the known keys of the job object; any JSON error (syntax, duplicate known key, too
/// deep, number out of range, not an object) comes back as the message of `invalid_json`.
/// With `layout`, also where each member is written: `Some` when the text is a JSON object,
/// whatever its keys hold.
pub(super) fn read_fields(
    text: &str,
    max_boxes: usize,
    layout: bool,
) -> (Result<Fields<'_>, String>, Option<JobLayout>) {
    if !text.trim_start_matches(WHITESPACE).starts_with('{') {
        // Say what is wrong with it: bad JSON, or good JSON of the wrong kind.
        let message = match serde_json::from_str::<Skip>(text) {
            Ok(_) => "the job must be a JSON object".into(),
            Err(e) => e.to_string(),
        };
        return (Err(message), None);
    }
    let mut rec = Recorder {
        text,
        keys: layout.then(Vec::new),
        fault: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let read = FieldsSeed {
        max_boxes,
        rec: &mut rec,
    }
    .deserialize(&mut de)
    .and_then(|fields| de.end().map(|()| fields));
    let layout = match (&read, rec.keys) {
        (Ok(_), Some(keys)) => layout_of(text, keys),
        _ => None,
    };
    let fields = match (read, rec.fault) {
        // The first fault wins, as when serde_json stops at it.
        (_, Some(fault)) => Err(fault),
        (Ok(fields), None) => Ok(fields),
        (Err(e), None) => Err(e.to_string()),
    };
    (fields, layout)
}

/// JSON's whitespace.
const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where a key is written, and the key unescaped when it has escapes.
type WrittenKey = (Range<usize>, Option<Box<str>>);

/// What a pass records besides the fields: where each key is written (when a layout is asked
/// for), and the first fault that serde_json would have stopped at but the pass reads on
/// past, as serde_json would have worded it.
struct Recorder<'de> {
    text: &'de str,
    /// Each key as written, and unescaped when it has escapes.
    keys: Option<Vec<WrittenKey>>,
    fault: Option<String>,
}

impl<'de> Recorder<'de> {
    /// Reads a key of the job object borrowed from the text: which key it is, and where it
    /// ends. The key goes into the layout.
    fn key<E: de::Error>(&mut self, raw: &'de RawValue) -> Result<(Key, usize), E> {
        let (span, unescaped) = self.read_key(raw)?;
        let key = Key::of(unescaped.as_deref().unwrap_or(inner(self.text, &span)));
        let end = span.end;
        if let Some(keys) = &mut self.keys {
            keys.push((span, unescaped));
        }
        Ok((key, end))
    }

    /// Reads a key of an object inside the job (`video`): which key it is, and where it ends.
    /// Only the job object's own members make up the layout.
    fn inner_key<E: de::Error>(&mut self, raw: &'de RawValue) -> Result<(VideoKey, usize), E> {
        let (span, unescaped) = self.read_key(raw)?;
        let key = VideoKey::of(unescaped.as_deref().unwrap_or(inner(self.text, &span)));
        Ok((key, span.end))
    }

    /// Where a key borrowed from the text is written, and the key unescaped when it has
    /// escapes.
    fn read_key<E: de::Error>(&mut self, raw: &'de RawValue) -> Result<WrittenKey, E> {
        let written = raw.get();
        // `written` is a slice of `text`: its offset is where it is written.
        let start = written.as_ptr() as usize - self.text.as_ptr() as usize;
        let span = start..start + written.len();
        let inner = &written[1..written.len() - 1];
        let unescaped = if inner.contains('\\') {
            match serde_json::from_str::<String>(written) {
                Ok(k) => Some(k.into_boxed_str()),
                Err(e) => {
                    // A lone surrogate (reading it raw checked the rest): reported where it
                    // is in the text, as reading the key in place would have (a key is on one
                    // line: its columns add up).
                    let (line, column) = position(self.text, start);
                    let own = format!(" at line {} column {}", e.line(), e.column());
                    let message = e.to_string();
                    let what = message.strip_suffix(&own).unwrap_or(&message);
                    let column = column + e.column();
                    self.fault
                        .get_or_insert_with(|| format!("{what} at line {line} column {column}"));
                    return Err(de::Error::custom("unreadable key"));
                }
            }
        } else {
            None
        };
        Ok((span, unescaped))
    }

    /// Notes a known key written twice (the key ending at `key_end`), where serde_json reports
    /// it: just before the colon (a known key of `video` is named as serde_json names a field:
    /// `frames`, not `video.frames`).
    fn repeated(&mut self, name: &str, key_end: usize) {
        if self.fault.is_none() {
            let gap = &self.text.as_bytes()[key_end..];
            let ws = gap.iter().take_while(|b| is_whitespace(**b)).count();
            let (line, column) = position(self.text, key_end + ws);
            self.fault = Some(format!(
                "duplicate field `{name}` at line {line} column {column}"
            ));
        }
    }
}

/// The text between the quotes of the key written at `span`.
fn inner<'t>(text: &'t str, span: &Range<usize>) -> &'t str {
    &text[span.start + 1..span.end - 1]
}

/// The line and column of byte `i` of `text`, counted as serde_json counts them in its
/// messages (the column is how many bytes of the line come before `i`).
fn position(text: &str, i: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..i];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |n| n + 1);
    let line = 1 + before[..line_start].iter().filter(|&&b| b == b'\n').count();
    (line, i - line_start)
}

/// The layout of a JSON object whose keys are written at `keys`: each value starts after its
/// key's colon and ends before the comma that precedes the next key (the last one before the
/// closing brace, the last byte that is not whitespace). `None` if the text is not shaped so,
/// which a text serde_json has read whole never is.
fn layout_of(text: &str, keys: Vec<WrittenKey>) -> Option<JobLayout> {
    let b = text.as_bytes();
    let skip = |mut i: usize| {
        while b.get(i).copied().is_some_and(is_whitespace) {
            i += 1;
        }
        i
    };
    let skip_back = |mut i: usize| {
        while i > 0 && is_whitespace(b[i - 1]) {
            i -= 1;
        }
        i
    };
    let close = skip_back(b.len()).checked_sub(1)?;
    let ends: Vec<usize> = keys
        .iter()
        .skip(1)
        .map(|(next, _)| skip_back(next.start))
        .collect();
    let mut members = Vec::with_capacity(keys.len());
    for (i, (key, unescaped)) in keys.into_iter().enumerate() {
        let colon = skip(key.end);
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip(colon + 1);
        let end = match ends.get(i) {
            Some(&comma) if comma > 0 && b[comma - 1] == b',' => skip_back(comma - 1),
            Some(_) => return None,
            None if b[close] == b'}' => skip_back(close),
            None => return None,
        };
        if end <= start {
            return None;
        }
        members.push(Member {
            key,
            value: start..end,
            unescaped,
        });
    }
    Some(JobLayout {
        len: text.len(),
        members,
    })
}

/// A JSON value, typed only as far as the contract needs (arrays and objects are skipped).
#[derive(Debug)]
enum Scalar<'de> {
    Null,
    Bool,
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::UInt(_) | Scalar::Int(_) | Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::UInt(n) => i64::try_from(n).ok(),
            Scalar::Int(n) => Some(n),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match *self {
            Scalar::UInt(n) => Some(n),
            Scalar::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::UInt(n) => Some(n as f64),
            Scalar::Int(n) => Some(n as f64),
            Scalar::Float(x) => Some(x),
            _ => None,
        }
    }

    /// A number as written (roughly: as a float is printed), anything else by its kind.
    fn describe(&self) -> String {
        match *self {
            Scalar::UInt(n) => n.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            _ => self.kind().to_string(),
        }
    }
}

/// The known keys of a job object.
#[derive(Default)]
pub(super) struct Fields<'de> {
    v: Option<Scalar<'de>>,
    job_id: Option<Scalar<'de>>,
    video_id: Option<Scalar<'de>>,
    frame_number: Option<Scalar<'de>>,
    image_base64: Option<Scalar<'de>>,
    reply_to: Option<Scalar<'de>>,
    boxes: Option<Result<Vec<[f64; 4]>, InputError>>,
    include: Option<Result<Include, InputError>>,
    /// `Ok(None)` when written as null.
    video: Option<Result<Option<Video<'de>>, InputError>>,
}

impl<'de> Fields<'de> {
    /// Best-effort echo fields: only well-typed, bounded values are echoed.
    pub(super) fn echo(&self) -> Echo {
        let bounded = |s: &Option<Scalar<'_>>| match s {
            Some(Scalar::Str(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Some(s.to_string()),
            _ => None,
        };
        Echo {
            job_id: bounded(&self.job_id),
            video_id: bounded(&self.video_id),
            frame_number: self.frame_number.as_ref().and_then(Scalar::as_u64),
            reply_to: bounded(&self.reply_to),
            video: match &self.video {
                Some(Ok(Some(v))) => Some(v.clone().into_owned()),
                _ => None,
            },
        }
    }

    /// Checks every field, in the contract's order (the first fault wins).
    pub(super) fn validate(self, has_raw_image: bool) -> Result<Job<'de>, InputError> {
        let invalid = |m: String| Err(InputError::InvalidJob(m));
        if let Some(v) = &self.v {
            match v.as_i64() {
                Some(VERSION) => {}
                Some(other) => return Err(InputError::UnsupportedVersion(other)),
                None => return invalid(format!("`v` must be an integer, got {}", v.kind())),
            }
        }
        let job_id = match self.job_id {
            Some(Scalar::Str(s)) if s.is_empty() => return invalid("`job_id` is empty".into()),
            Some(Scalar::Str(s)) if s.len() > MAX_ID_BYTES => {
                return invalid(format!(
                    "`job_id` is {} bytes, at most {MAX_ID_BYTES} allowed",
                    s.len()
                ))
            }
            Some(Scalar::Str(s)) => s,
            Some(v) => return invalid(format!("`job_id` must be a string, got {}", v.kind())),
            None => return invalid("`job_id` is required".into()),
        };
        let video_id = optional_id("video_id", self.video_id)?;
        let reply_to = optional_id("reply_to", self.reply_to)?;
        let frame_number = match self.frame_number {
            None | Some(Scalar::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n),
                None => {
                    return invalid(format!(
                        "`frame_number` must be an integer >= 0, got {}",
                        v.kind()
                    ))
                }
            },
        };
        let image_base64 = match self.image_base64 {
            None | Some(Scalar::Null) => None,
            Some(Scalar::Str(s)) => Some(s),
            Some(v) => {
                return invalid(format!("`image_base64` must be a string, got {}", v.kind()))
            }
        };
        if image_base64.is_none() && !has_raw_image {
            return Err(InputError::MissingImage);
        }
        let boxes = self.boxes.unwrap_or(Ok(Vec::new()))?;
        let include = self.include.unwrap_or(Ok(Include::default()))?;
        let video = self.video.unwrap_or(Ok(None))?;
        if let Some(v) = &video {
            if video_id.is_none() {
                return invalid("`video_id` is required when `video` is present".into());
            }
            let Some(n) = frame_number else {
                return invalid("`frame_number` is required when `video` is present".into());
            };
            if n >= v.frames {
                return invalid(format!(
                    "`frame_number` must be below `video.frames` ({}), got {n}",
                    v.frames
                ));
            }
        }
        Ok(Job {
            job_id,
            video_id,
            frame_number,
            image_base64: if has_raw_image { None } else { image_base64 },
            boxes,
            reply_to,
            include,
            video,
        })
    }
}

/// `video_id` and `reply_to`: null, or a string of 1 to [`MAX_ID_BYTES`] bytes.
fn optional_id<'de>(
    key: &str,
    v: Option<Scalar<'de>>,
) -> Result<Option<Cow<'de, str>>, InputError> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) if !s.is_empty() && s.len() <= MAX_ID_BYTES => Ok(Some(s)),
        Some(Scalar::Str(_)) => Err(InputError::InvalidJob(format!(
            "`{key}` must be 1 to {MAX_ID_BYTES} bytes"
        ))),
        Some(v) => Err(InputError::InvalidJob(format!(
            "`{key}` must be a string, got {}",
            v.kind()
        ))),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A known key of the job object, or any other.
enum Key {
    V,
    JobId,
    VideoId,
    FrameNumber,
    ImageBase64,
    Boxes,
    ReplyTo,
    Include,
    Video,
    Other,
}

impl Key {
    /// Which key `name` (unescaped) is.
    fn of(name: &str) -> Key {
        match name {
            "v" => Key::V,
            "job_id" => Key::JobId,
            "video_id" => Key::VideoId,
            "frame_number" => Key::FrameNumber,
            "image_base64" => Key::ImageBase64,
            "boxes" => Key::Boxes,
            "reply_to" => Key::ReplyTo,
            "include" => Key::Include,
            "video" => Key::Video,
            _ => Key::Other,
        }
    }
}

/// Reads the job object into [`Fields`], noting its keys in `rec`.
struct FieldsSeed<'r, 'de> {
    max_boxes: usize,
    rec: &'r mut Recorder<'de>,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_, 'de> {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_, 'de> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a job object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        /// Stores a known key's value. A second occurrence of the key is a JSON error, noted
        /// and reported once the object is read: its layout is still wanted (a rejected job's
        /// dead letter is rewritten from it).
        macro_rules! once {
            ($slot:expr, $name:literal, $end:expr, $seed:expr) => {{
                if $slot.is_some() {
                    self.rec.repeated($name, $end);
                    map.next_value::<Skip>()?;
                } else {
                    $slot = Some(map.next_value_seed($seed)?);
                }
            }};
        }
        let mut f = Fields::default();
        // Strings whose content the contract never reads are not copied even when escaped.
        let text = ScalarSeed { keep_str: true };
        let kind = ScalarSeed { keep_str: false };
        while let Some(raw) = map.next_key::<&'de RawValue>()? {
            let (key, end) = self.rec.key::<A::Error>(raw)?;
            match key {
                Key::V => once!(f.v, "v", end, kind),
                Key::JobId => once!(f.job_id, "job_id", end, text),
                Key::VideoId => once!(f.video_id, "video_id", end, text),
                Key::FrameNumber => {
                    once!(f.frame_number, "frame_number", end, kind)
                }
                Key::ImageBase64 => {
                    once!(f.image_base64, "image_base64", end, text)
                }
                Key::ReplyTo => once!(f.reply_to, "reply_to", end, text),
                Key::Boxes => {
                    let seed = BoxesSeed {
                        max: self.max_boxes,
                    };
                    once!(f.boxes, "boxes", end, seed)
                }
                Key::Include => once!(f.include, "include", end, IncludeSeed),
                Key::Video => {
                    once!(
                        f.video,
                        "video",
                        end,
                        VideoSeed {
                            rec: &mut *self.rec
                        }
                    )
                }
                Key::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(f)
    }
}

/// Any JSON value, read and dropped. Unlike `IgnoredAny` it goes through `deserialize_any`, so
/// serde_json applies its recursion limit and number range checks, as it does for a `Value`.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
                drain_seq(seq).map(|_| Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
                drain_map(map).map(|_| Skip)
            }
        }
        d.deserialize_any(SkipVisitor)
    }
}

/// Reads the rest of a sequence; returns how many elements that was.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<usize, A::Error> {
    let mut n = 0;
    while seq.next_element::<Skip>()?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

/// Reads one value as a [`Scalar`]; strings without escapes are borrowed from the input.
#[derive(Clone, Copy)]
struct ScalarSeed {
    /// Keep the text of strings with escapes (otherwise only their kind is kept).
    keep_str: bool,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::UInt(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'de>, E> {
        Ok(if n >= 0 {
            Scalar::UInt(n as u64)
        } else {
            Scalar::Int(n)
        })
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(x))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(if self.keep_str {
            Cow::Owned(s.to_owned())
        } else {
            Cow::Borrowed("")
        }))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
        drain_seq(seq)?;
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
        drain_map(map)?;
        Ok(Scalar::Object)
    }
}

/// The `Visitor` methods of a seed that expects an array: every other kind of value is read
/// and becomes `self.reject(kind)` (null is left to each seed).
macro_rules! reject_non_arrays {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.reject("a boolean"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.reject("a number"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.reject("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.reject("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.reject("a string"))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map)?;
            Ok(self.reject("an object"))
        }
    };
}

/// Reads `boxes`: null or an array of `[x1, y1, x2, y2]`. Collects at most `max` boxes; past
/// that the rest of the array is only counted (for the message), never stored.
#[derive(Clone, Copy)]
struct BoxesSeed {
    max: usize,
}

impl BoxesSeed {
    fn reject(self, kind: &str) -> Result<Vec<[f64; 4]>, InputError> {
        Err(InputError::InvalidBox(format!(
            "`boxes` must be an array of [x1, y1, x2, y2], got {kind}"
        )))
    }
}

impl<'de> DeserializeSeed<'de> for BoxesSeed {
    type Value = Result<Vec<[f64; 4]>, InputError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoxesSeed {
    type Value = Result<Vec<[f64; 4]>, InputError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of boxes")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Vec::new()))
    }

    reject_non_arrays!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut boxes = Vec::new();
        // The first bad box; a count over the limit is reported before it, as it is checked
        // first.
        let mut fault = None;
        let mut n = 0;
        loop {
            if n == self.max {
                if seq.next_element::<Skip>()?.is_none() {
                    break;
                }
                let total = n + 1 + drain_seq(seq)?;
                return Ok(Err(InputError::InvalidBox(format!(
                    "{total} boxes, at most {} allowed",
                    self.max
                ))));
            }
            match seq.next_element_seed(BoxSeed)? {
                None => break,
                Some(Ok(b)) if fault.is_none() => boxes.push(b),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    fault.get_or_insert_with(|| InputError::InvalidBox(e.message(n)));
                }
            }
            n += 1;
        }
        Ok(match fault {
            Some(e) => Err(e),
            None => Ok(boxes),
        })
    }
}

/// What is wrong with one box.
#[derive(Clone, Copy)]
enum BoxFault {
    Shape,
    NonNumeric,
}

impl BoxFault {
    fn message(self, i: usize) -> String {
        match self {
            BoxFault::Shape => format!("box {i} is not an array of 4 numbers"),
            BoxFault::NonNumeric => format!("box {i} has a non-numeric coordinate"),
        }
    }
}

/// Reads one box: an array of exactly 4 numbers.
#[derive(Clone, Copy)]
struct BoxSeed;

impl BoxSeed {
    fn reject(self, _kind: &str) -> Result<[f64; 4], BoxFault> {
        Err(BoxFault::Shape)
    }
}

impl<'de> DeserializeSeed<'de> for BoxSeed {
    type Value = Result<[f64; 4], BoxFault>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoxSeed {
    type Value = Result<[f64; 4], BoxFault>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[x1, y1, x2, y2]")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.reject("null"))
    }

    reject_non_arrays!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0.0; 4];
        let mut len = 0;
        let mut numeric = true;
        while len < 4 {
            match seq.next_element::<Coord>()? {
                None => break,
                Some(Coord(c)) => {
                    match c {
                        Some(x) => out[len] = x,
                        None => numeric = false,
                    }
                    len += 1;
                }
            }
        }
        if len < 4 || drain_seq(seq)? > 0 {
            return Ok(Err(BoxFault::Shape));
        }
        Ok(if numeric {
            Ok(out)
        } else {
            Err(BoxFault::NonNumeric)
        })
    }
}

/// One coordinate: `Some` for any JSON number, `None` for anything else.
struct Coord(Option<f64>);

impl<'de> Deserialize<'de> for Coord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CoordVisitor;
        impl<'de> Visitor<'de> for CoordVisitor {
            type Value = Coord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Coord, E> {
                Ok(Coord(Some(n as f64)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Coord, E> {
                Ok(Coord(Some(n as f64)))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Coord, E> {
                Ok(Coord(Some(x)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Coord, E> {
                Ok(Coord(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Coord, E> {
                Ok(Coord(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Coord, E> {
                Ok(Coord(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Coord, A::Error> {
                drain_seq(seq)?;
                Ok(Coord(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Coord, A::Error> {
                drain_map(map)?;
                Ok(Coord(None))
            }
        }
        d.deserialize_any(CoordVisitor)
    }
}

/// Reads `include`: null or an array of known output names.
#[derive(Clone, Copy)]
struct IncludeSeed;

impl IncludeSeed {
    fn reject(self, kind: &str) -> Result<Include, InputError> {
        Err(InputError::InvalidJob(format!(
            "`include` must be an array, got {kind}"
        )))
    }
}

impl<'de> DeserializeSeed<'de> for IncludeSeed {
    type Value = Result<Include, InputError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IncludeSeed {
    type Value = Result<Include, InputError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of output names")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Include::default()))
    }

    reject_non_arrays!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut include = Include::default();
        let mut fault = None;
        while let Some(item) = seq.next_element_seed(ScalarSeed { keep_str: true })? {
            if fault.is_some() {
                continue;
            }
            match item {
                Scalar::Str(s) if s == "vertices" => include.vertices = true,
                Scalar::Str(other) => {
                    fault = Some(InputError::InvalidJob(format!(
                        "unknown `include` item {:?} (known: \"vertices\")",
                        truncate(&other, 40)
                    )))
                }
                _ => {
                    fault = Some(InputError::InvalidJob(
                        "`include` items must be strings".into(),
                    ))
                }
            }
        }
        Ok(match fault {
            Some(e) => Err(e),
            None => Ok(include),
        })
    }
}

/// A known key of the `video` object, or any other.
enum VideoKey {
    Frames,
    Fps,
    ReplyTo,
    Other,
}

impl VideoKey {
    /// Which key `name` (unescaped) is.
    fn of(name: &str) -> VideoKey {
        match name {
            "frames" => VideoKey::Frames,
            "fps" => VideoKey::Fps,
            "reply_to" => VideoKey::ReplyTo,
            _ => VideoKey::Other,
        }
    }
}

/// Reads `video`: null, or an object with `frames` (an integer >= 1), `fps` (a number > 0)
/// and an optional `reply_to` (a string of 1 to [`MAX_ID_BYTES`] bytes); its unknown keys are
/// skipped, a repeated known key is a JSON fault as in the job object. Its fields are checked
/// in that order, whatever the order they are written in.
struct VideoSeed<'r, 'de> {
    rec: &'r mut Recorder<'de>,
}

impl VideoSeed<'_, '_> {
    fn reject<'de>(&self, kind: &str) -> Result<Option<Video<'de>>, InputError> {
        Err(InputError::InvalidJob(format!(
            "`video` must be an object, got {kind}"
        )))
    }
}

impl<'de> DeserializeSeed<'de> for VideoSeed<'_, 'de> {
    type Value = Result<Option<Video<'de>>, InputError>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for VideoSeed<'_, 'de> {
    type Value = Result<Option<Video<'de>>, InputError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a video object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(None))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.reject("a boolean"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.reject("a number"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.reject("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.reject("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.reject("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(self.reject("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut frames, mut fps, mut reply_to) = (None, None, None);
        let kind = ScalarSeed { keep_str: false };
        while let Some(raw) = map.next_key::<&'de RawValue>()? {
            let (key, end) = self.rec.inner_key::<A::Error>(raw)?;
            let (slot, name, seed) = match key {
                VideoKey::Frames => (&mut frames, "frames", kind),
                VideoKey::Fps => (&mut fps, "fps", kind),
                VideoKey::ReplyTo => (&mut reply_to, "reply_to", ScalarSeed { keep_str: true }),
                VideoKey::Other => {
                    map.next_value::<Skip>()?;
                    continue;
                }
            };
            if slot.is_some() {
                self.rec.repeated(name, end);
                map.next_value::<Skip>()?;
            } else {
                *slot = Some(map.next_value_seed(seed)?);
            }
        }
        Ok(video(frames, fps, reply_to).map(Some))
    }
}

/// Checks the fields of a `video` object, in the contract's order.
fn video<'de>(
    frames: Option<Scalar<'de>>,
    fps: Option<Scalar<'de>>,
    reply_to: Option<Scalar<'de>>,
) -> Result<Video<'de>, InputError> {
    let invalid = |m: String| Err(InputError::InvalidJob(m));
    let frames = match frames {
        None => return invalid("`video.frames` is required".into()),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                return invalid(format!(
                    "`video.frames` must be an integer >= 1, got {}",
                    v.describe()
                ))
            }
        },
    };
    let fps = match fps {
        None => return invalid("`video.fps` is required".into()),
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => x,
            _ => {
                return invalid(format!(
                    "`video.fps` must be a number > 0, got {}",
                    v.describe()
                ))
            }
        },
    };
    let reply_to = optional_id("video.reply_to", reply_to)?;
    Ok(Video {
        frames,
        fps,
        reply_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::job::{Limits, ParseError};

    fn limits() -> Limits {
        Limits::default()
    }

    #[allow(clippy::result_large_err)]
    fn parse<'a>(
        raw: &'a [u8],
        has_raw_image: bool,
        limits: &Limits,
    ) -> Result<Job<'a>, (InputError, Echo)> {
        Job::parse(raw, has_raw_image, limits).map_err(|e| (e.error, e.echo))
    }

    fn code(raw: &str) -> String {
        parse(raw.as_bytes(), false, &limits())
            .unwrap_err()
            .0
            .code()
            .to_string()
    }

    fn error(raw: &str) -> InputError {
        parse(raw.as_bytes(), false, &limits()).unwrap_err().0
    }

    // The tests of the worker's former `job` module, unchanged in what they assert.

    #[test]
    fn a_full_job_parses() {
        let job = parse(
            br#"{"v":1,"job_id":"a","video_id":"v","frame_number":16,"image_base64":"AAAA",
                "boxes":[[1,2,30,40.5]],"reply_to":"r","include":["vertices"],"extra":true}"#,
            false,
            &limits(),
        )
        .unwrap();
        assert_eq!(job.echo().job_id.as_deref(), Some("a"));
        assert_eq!(job.echo().frame_number, Some(16));
        assert_eq!(job.boxes, vec![[1.0, 2.0, 30.0, 40.5]]);
        assert!(job.include.vertices);
        assert_eq!(job.image_base64.as_deref(), Some("AAAA"));
    }

    #[test]
    fn the_raw_image_field_wins_over_base64() {
        let job = parse(br#"{"job_id":"a","image_base64":"AAAA"}"#, true, &limits()).unwrap();
        assert_eq!(job.image_base64, None);
        assert!(parse(br#"{"job_id":"a"}"#, true, &limits()).is_ok());
    }

    #[test]
    fn each_bad_job_gets_its_code() {
        assert_eq!(code("{not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "invalid_json");
        assert_eq!(
            code(r#"{"v":2,"job_id":"a","image_base64":"A"}"#),
            "unsupported_version"
        );
        assert_eq!(
            code(r#"{"v":"1","job_id":"a","image_base64":"A"}"#),
            "invalid_job"
        );
        assert_eq!(code(r#"{"image_base64":"A"}"#), "invalid_job");
        assert_eq!(code(r#"{"job_id":7,"image_base64":"A"}"#), "invalid_job");
        assert_eq!(code(r#"{"job_id":"a"}"#), "missing_image");
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","frame_number":-1}"#),
            "invalid_job"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","boxes":{}}"#),
            "invalid_box"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","boxes":[[1,2,3]]}"#),
            "invalid_box"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","boxes":[[1,2,3,"x"]]}"#),
            "invalid_box"
        );
        assert_eq!(
            code(r#"{"job_id":"a","image_base64":"A","include":["mesh"]}"#),
            "invalid_job"
        );
        let long = format!(r#"{{"job_id":"{}","image_base64":"A"}}"#, "x".repeat(300));
        assert_eq!(code(&long), "invalid_job");
        let many = format!(
            r#"{{"job_id":"a","image_base64":"A","boxes":[{}]}}"#,
            vec!["[0,0,1,1]"; 33].join(",")
        );
        assert_eq!(code(&many), "invalid_box");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(code(&deep), "invalid_json");
    }

    #[test]
    fn rejected_jobs_still_echo_what_they_can() {
        let (e, echo) = parse(
            br#"{"job_id":"j1","video_id":"v","frame_number":3,"reply_to":"out","v":9}"#,
            false,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "unsupported_version");
        assert_eq!(echo.job_id.as_deref(), Some("j1"));
        assert_eq!(echo.reply_to.as_deref(), Some("out"));
        assert_eq!(echo.frame_number, Some(3));
    }

    #[test]
    fn oversized_jobs_are_refused_before_parsing() {
        let mut l = limits();
        l.max_job_bytes = 10;
        let (e, _) = parse(br#"{"job_id":"abcdef","image_base64":"A"}"#, false, &l).unwrap_err();
        assert_eq!(e.code(), "invalid_job");
    }

    // New with the typed parser.

    #[test]
    fn the_base64_image_is_borrowed_from_the_input() {
        let raw = br#"{"job_id":"a","image_base64":"AAAA"}"#;
        let job = Job::parse(raw, false, &limits()).unwrap();
        assert!(matches!(job.image_base64, Some(Cow::Borrowed(_))));
        assert!(matches!(job.job_id, Cow::Borrowed("a")));
        // Escapes need a copy, and still read right.
        let job = Job::parse(
            br#"{"job_id":"a\u0062","image_base64":"A\/A="}"#,
            false,
            &limits(),
        )
        .unwrap();
        assert_eq!(job.job_id, "ab");
        assert_eq!(job.image_base64.as_deref(), Some("A/A="));
        let owned: Job<'static> = job.clone().into_owned();
        assert_eq!(owned, job);
    }

    #[test]
    fn a_million_boxes_are_refused_without_collecting_them() {
        let many = format!(
            r#"{{"job_id":"a","image_base64":"A","boxes":[{}]}}"#,
            vec!["[0,0,1,1]"; 1_000_000].join(",")
        );
        let e = Job::parse(many.as_bytes(), false, &limits()).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::InvalidBox);
        assert_eq!(
            e.error,
            InputError::InvalidBox("1000000 boxes, at most 32 allowed".into())
        );
        assert_eq!(e.echo.job_id.as_deref(), Some("a"));
        // Exactly at the limit is fine.
        let max = format!(
            r#"{{"job_id":"a","image_base64":"A","boxes":[{}]}}"#,
            vec!["[0,0,1,1]"; 32].join(",")
        );
        assert_eq!(
            Job::parse(max.as_bytes(), false, &limits())
                .unwrap()
                .boxes
                .len(),
            32
        );
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let j = |extra: &str| format!(r#"{{"job_id":"a","image_base64":"A"{extra}}}"#);
        assert_eq!(
            error(&j(r#","v":1.0"#)),
            InputError::InvalidJob("`v` must be an integer, got a number".into())
        );
        assert_eq!(error(&j(r#","v":null"#)).code(), ErrorCode::InvalidJob);
        assert_eq!(
            error(r#"{"v":-3,"job_id":"a","image_base64":"A"}"#),
            InputError::UnsupportedVersion(-3)
        );
        assert_eq!(
            error(r#"{"job_id":"","image_base64":"A"}"#),
            InputError::InvalidJob("`job_id` is empty".into())
        );
        assert_eq!(
            error(r#"{"job_id":null,"image_base64":"A"}"#),
            InputError::InvalidJob("`job_id` must be a string, got null".into())
        );
        assert_eq!(
            error(&j(r#","video_id":"""#)),
            InputError::InvalidJob("`video_id` must be 1 to 256 bytes".into())
        );
        assert_eq!(
            error(&j(r#","reply_to":["x"]"#)),
            InputError::InvalidJob("`reply_to` must be a string, got an array".into())
        );
        assert_eq!(
            error(&j(r#","frame_number":1.5"#)),
            InputError::InvalidJob("`frame_number` must be an integer >= 0, got a number".into())
        );
        assert_eq!(
            error(r#"{"job_id":"a","image_base64":{"x":1}}"#),
            InputError::InvalidJob("`image_base64` must be a string, got an object".into())
        );
        assert_eq!(
            error(&j(r#","boxes":"x""#)),
            InputError::InvalidBox(
                "`boxes` must be an array of [x1, y1, x2, y2], got a string".into()
            )
        );
        assert_eq!(
            error(&j(r#","boxes":[[0,0,1,1],[1,2,3,4,5]]"#)),
            InputError::InvalidBox("box 1 is not an array of 4 numbers".into())
        );
        assert_eq!(
            error(&j(r#","boxes":[[0,0,1,[1]]]"#)),
            InputError::InvalidBox("box 0 has a non-numeric coordinate".into())
        );
        assert_eq!(
            error(&j(r#","include":"vertices""#)),
            InputError::InvalidJob("`include` must be an array, got a string".into())
        );
        assert_eq!(
            error(&j(r#","include":["vertices",3]"#)),
            InputError::InvalidJob("`include` items must be strings".into())
        );
        assert_eq!(
            error(&j(r#","include":["mesh","x"]"#)),
            InputError::InvalidJob("unknown `include` item \"mesh\" (known: \"vertices\")".into())
        );
        // Field order in the text does not change which fault is reported.
        assert_eq!(
            error(r#"{"boxes":7,"image_base64":"A","job_id":"a","v":2}"#),
            InputError::UnsupportedVersion(2)
        );
        // A count over the limit is reported before a bad box, as it is checked first.
        let many = j(&format!(
            r#","boxes":[[1],{}]"#,
            vec!["[0,0,1,1]"; 40].join(",")
        ));
        assert_eq!(
            error(&many),
            InputError::InvalidBox("41 boxes, at most 32 allowed".into())
        );
    }

    #[test]
    fn json_faults_are_invalid_json() {
        let ok = r#"{"job_id":"a","image_base64":"A"}"#;
        assert!(Job::parse(ok.as_bytes(), false, &limits()).is_ok());
        for bad in [
            "",
            "  ",
            "null",
            r#""job""#,
            r#"{"job_id":"a","image_base64":"A"} x"#,
            r#"{"job_id":"a","image_base64":"A",}"#,
            r#"{"job_id":"a","job_id":"b","image_base64":"A"}"#,
            r#"{"job_id":"a","image_base64":"A","n":1e400}"#,
            r#"{"job_id":"a","image_base64":"A","boxes":[[0,0,1,1e400]]}"#,
        ] {
            let e = Job::parse(bad.as_bytes(), false, &limits()).unwrap_err();
            assert_eq!(e.error.code(), ErrorCode::InvalidJson, "{bad}: {}", e.error);
            assert_eq!(e.echo, Echo::default(), "{bad}");
        }
        let e = Job::parse(b"[1,2]", false, &limits()).unwrap_err();
        assert_eq!(
            e.error,
            InputError::InvalidJson("the job must be a JSON object".into())
        );
        let e = Job::parse(b"{\"job_id\":\"\xff\"}", false, &limits()).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::InvalidJson);
        // Unknown keys are skipped, but still within serde_json's recursion limit.
        let nested = |depth: usize| {
            format!(
                r#"{{"job_id":"a","image_base64":"A","x":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(Job::parse(nested(100).as_bytes(), false, &limits()).is_ok());
        let e = Job::parse(nested(10_000).as_bytes(), false, &limits()).unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::InvalidJson);
        assert!(
            e.error.to_string().contains("recursion limit"),
            "{}",
            e.error
        );
    }

    #[test]
    fn the_echo_does_not_depend_on_the_faulty_field() {
        let e = Job::parse(
            br#"{"boxes":[[1]],"job_id":"j","video_id":"v","frame_number":7,"reply_to":"r","image_base64":"A"}"#,
            false,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::InvalidBox);
        assert_eq!(
            e.echo,
            Echo {
                job_id: Some("j".into()),
                video_id: Some("v".into()),
                frame_number: Some(7),
                reply_to: Some("r".into()),
                video: None,
            }
        );
        // Ill-typed or oversized fields are not echoed; the others still are.
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let raw = format!(
            r#"{{"job_id":"j","video_id":"{long}","frame_number":-1,"reply_to":5,"image_base64":"A"}}"#
        );
        let e = Job::parse(raw.as_bytes(), false, &limits()).unwrap_err();
        assert_eq!(
            e.echo,
            Echo {
                job_id: Some("j".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn unknown_keys_of_any_shape_are_ignored() {
        let job = Job::parse(
            br#"{"trace":{"a":[1,{"b":null}],"c":"\u00e9"},"job_id":"a","image_base64":"A","t":-1.5e3,"boxes":null,"include":null,"video_id":null}"#,
            false,
            &limits(),
        )
        .unwrap();
        assert_eq!(job, Job::new("a").image_base64("A"));
    }

    // The layout read in the same pass.

    /// Each member of `raw`'s layout: its key unescaped, and its value as written.
    fn members(raw: &str) -> Vec<(String, String)> {
        let (_, layout) = Job::parse_with_layout(raw.as_bytes(), false, &limits());
        let layout = layout.expect("a JSON object has a layout");
        assert_eq!(layout.len, raw.len());
        layout
            .members
            .iter()
            .map(|m| {
                assert_eq!(&raw[m.key.start..m.key.start + 1], "\"");
                let name = m.name(raw.as_bytes()).to_string();
                (name, raw[m.value.clone()].to_string())
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_layout_says_where_each_member_is_written() {
        assert_eq!(
            members(r#"{"job_id":"a","image_base64":"AAAA","boxes":[[1,2,3,4]]}"#),
            pairs(&[
                ("job_id", r#""a""#),
                ("image_base64", r#""AAAA""#),
                ("boxes", "[[1,2,3,4]]"),
            ])
        );
        // Whitespace anywhere, escaped keys and strings, nested values with commas and braces
        // in them, a repeated unknown key.
        let raw = " \n{ \"v\" :\t1 ,\r\n \"tr\\u0061ce\": {\"a\": [1, \"},\\\"\"], \"b\": {}} ,\"x\":\"\\\"}\",\"x\":-1.5e3,\"job_id\":\"a\\/b\"\n,\"n\":null}\n ";
        assert_eq!(
            members(raw),
            pairs(&[
                ("v", "1"),
                ("trace", r#"{"a": [1, "},\""], "b": {}}"#),
                ("x", r#""\"}""#),
                ("x", "-1.5e3"),
                ("job_id", r#""a\/b""#),
                ("n", "null"),
            ])
        );
        assert_eq!(members("{}"), pairs(&[]));
        assert_eq!(members(r#"{"":""}"#), pairs(&[("", r#""""#)]));
        // Reading the layout changes nothing of what the parse says.
        for raw in [
            r#"{"job_id":"a","image_base64":"A","boxes":[[0,0,1,1]],"extra":{"k":[true]}}"#,
            r#"{"image_base64":"A"}"#,
            r#"{"job_id":"a","image_base64":"A","job_id":"b"}"#,
            "[1]",
        ] {
            let (job, _) = Job::parse_with_layout(raw.as_bytes(), false, &limits());
            assert_eq!(job, Job::parse(raw.as_bytes(), false, &limits()), "{raw}");
        }
    }

    #[test]
    fn rejected_objects_have_a_layout_and_other_texts_none() {
        fn with<'a>(raw: &'a [u8], l: &Limits) -> (Result<Job<'a>, ParseError>, Option<JobLayout>) {
            Job::parse_with_layout(raw, false, l)
        }
        // Valid JSON objects that are not valid jobs: rejected, with their layout.
        for raw in [
            &br#"{"image_base64":"A","note":1}"#[..],
            br#"{"job_id":"a","v":2}"#,
            br#"{"job_id":"a","image_base64":"A","job_id":"b"}"#,
        ] {
            let (job, layout) = with(raw, &limits());
            assert!(job.is_err());
            assert!(layout.is_some_and(|l| !l.members.is_empty()), "{raw:?}");
        }
        // Over max_job_bytes: refused for its size, and still laid out.
        let mut small = limits();
        small.max_job_bytes = 10;
        let (job, layout) = with(br#"{"job_id":"abcdef","image_base64":"A"}"#, &small);
        assert_eq!(job.unwrap_err().error.code(), ErrorCode::InvalidJob);
        assert_eq!(layout.unwrap().members.len(), 2);
        let (job, layout) = with(b"\xff{\"job_id\":\"abcdef\"}", &small);
        assert_eq!(job.unwrap_err().error.code(), ErrorCode::InvalidJob);
        assert_eq!(layout, None);
        // Not a JSON object: no layout.
        for raw in [
            &b"[1]"[..],
            b"\"job\"",
            b"{\"job_id\":",
            b"{\"job_id\":\"a\"} x",
            b"{\"job_id\":\"\xff\"}",
            b"{\"a\":1e400}",
        ] {
            let (job, layout) = with(raw, &limits());
            assert_eq!(job.unwrap_err().error.code(), ErrorCode::InvalidJson);
            assert_eq!(layout, None, "{raw:?}");
        }
    }

    #[test]
    fn faults_read_past_are_worded_as_serde_json_words_them() {
        /// What serde_json says of `raw` read as a struct with a `job_id` field (which stops
        /// at a repeated `job_id`, where this parser reads on).
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct JobId {
            job_id: de::IgnoredAny,
        }
        for raw in [
            r#"{"job_id":"a","job_id":"b"}"#,
            "{\"job_id\":\"a\",\n  \"job_id\"  \n\t: 1, \"x\": [}",
            "{\"job_id\":\"a\",\"job_\\u0069d\" :2}",
            "{\"job_id\":\"a\",\"job_id\"",
        ] {
            let serde = serde_json::from_str::<JobId>(raw)
                .err()
                .unwrap()
                .to_string();
            assert_eq!(error(raw), InputError::InvalidJson(serde), "{raw}");
        }
        // Lone surrogates in a key: a key read raw is checked for them on its own.
        for raw in [
            "{\"job_id\":\"a\",\n \"x\\ud800\":1}",
            "{\"x\\udc00y\":1}",
            "{\"ab\\ud800\\u0041\":1}",
        ] {
            let serde = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw)
                .err()
                .unwrap()
                .to_string();
            assert_eq!(error(raw), InputError::InvalidJson(serde), "{raw}");
        }
    }

    // Tracked videos (DESIGN §13).

    /// A job of the tracked video `v` (frame 3) with `video` written as `video`.
    fn tracked(video: &str) -> String {
        format!(
            r#"{{"job_id":"v:3","video_id":"v","frame_number":3,"image_base64":"A","video":{video}}}"#
        )
    }

    #[test]
    fn a_tracked_frame_parses_with_its_video() {
        let raw = tracked(r#"{"frames":120,"fps":29.97,"reply_to":"hmr2:results:mine"}"#);
        let job = Job::parse(raw.as_bytes(), false, &limits()).unwrap();
        assert_eq!(
            job.video,
            Some(Video::new(120, 29.97).reply_to("hmr2:results:mine"))
        );
        // An integer frame rate, no reply_to, keys in any order, unknown keys of any shape.
        let raw = tracked(r#"{"note":{"a":[1,{"b":null}]},"fps":25,"x":-1e3,"frames":4}"#);
        let job = Job::parse(raw.as_bytes(), false, &limits()).unwrap();
        assert_eq!(job.video, Some(Video::new(4, 25.0)));
        // The last frame of the video is within it; null is no video.
        let last = r#"{"job_id":"v:9","video_id":"v","frame_number":9,"image_base64":"A","video":{"frames":10,"fps":1}}"#;
        assert_eq!(
            Job::parse(last.as_bytes(), false, &limits())
                .unwrap()
                .video
                .map(|v| v.frames),
            Some(10)
        );
        let raw = tracked("null");
        let none = Job::parse(raw.as_bytes(), false, &limits()).unwrap();
        assert_eq!(none.video, None);
        assert_eq!(
            none,
            Job::new("v:3").video("v", 3).image_base64("A"),
            "null is no video"
        );
        // A reply_to without escapes is borrowed, like the job's own.
        let raw = tracked(r#"{"frames":5,"fps":2.5,"reply_to":"p:results:o"}"#);
        let job = Job::parse(raw.as_bytes(), false, &limits()).unwrap();
        let video = job.video.clone().unwrap();
        assert!(matches!(video.reply_to, Some(Cow::Borrowed("p:results:o"))));
        assert_eq!(job.clone().into_owned(), job);
    }

    #[test]
    fn a_bad_video_is_an_invalid_job_that_names_its_field() {
        let bad = |video: &str| error(&tracked(video));
        let invalid = |m: &str| InputError::InvalidJob(m.into());
        assert_eq!(bad("7"), invalid("`video` must be an object, got a number"));
        assert_eq!(
            bad("[1]"),
            invalid("`video` must be an object, got an array")
        );
        assert_eq!(
            bad(r#""x""#),
            invalid("`video` must be an object, got a string")
        );
        assert_eq!(bad("{}"), invalid("`video.frames` is required"));
        assert_eq!(bad(r#"{"frames":3}"#), invalid("`video.fps` is required"));
        assert_eq!(
            bad(r#"{"frames":0,"fps":30}"#),
            invalid("`video.frames` must be an integer >= 1, got 0")
        );
        assert_eq!(
            bad(r#"{"frames":-2,"fps":30}"#),
            invalid("`video.frames` must be an integer >= 1, got -2")
        );
        assert_eq!(
            bad(r#"{"frames":10.0,"fps":30}"#),
            invalid("`video.frames` must be an integer >= 1, got 10")
        );
        assert_eq!(
            bad(r#"{"frames":"10","fps":30}"#),
            invalid("`video.frames` must be an integer >= 1, got a string")
        );
        assert_eq!(
            bad(r#"{"frames":10,"fps":0}"#),
            invalid("`video.fps` must be a number > 0, got 0")
        );
        assert_eq!(
            bad(r#"{"frames":10,"fps":-0.5}"#),
            invalid("`video.fps` must be a number > 0, got -0.5")
        );
        assert_eq!(
            bad(r#"{"frames":10,"fps":null}"#),
            invalid("`video.fps` must be a number > 0, got null")
        );
        assert_eq!(
            bad(r#"{"frames":10,"fps":30,"reply_to":7}"#),
            invalid("`video.reply_to` must be a string, got a number")
        );
        assert_eq!(
            bad(r#"{"frames":10,"fps":30,"reply_to":""}"#),
            invalid("`video.reply_to` must be 1 to 256 bytes")
        );
        let long = format!(
            r#"{{"frames":10,"fps":30,"reply_to":"{}"}}"#,
            "r".repeat(257)
        );
        assert_eq!(
            bad(&long),
            invalid("`video.reply_to` must be 1 to 256 bytes")
        );
        let at_limit = format!(
            r#"{{"frames":10,"fps":30,"reply_to":"{}"}}"#,
            "r".repeat(256)
        );
        assert!(Job::parse(tracked(&at_limit).as_bytes(), false, &limits()).is_ok());
        // The fields are checked in the contract's order, whatever order they are written in.
        assert_eq!(
            bad(r#"{"reply_to":1,"fps":0,"frames":0}"#),
            invalid("`video.frames` must be an integer >= 1, got 0")
        );
    }

    #[test]
    fn a_tracked_frame_needs_its_video_id_and_a_frame_number_within_the_video() {
        let video = r#""video":{"frames":10,"fps":30}"#;
        let invalid = |m: &str| InputError::InvalidJob(m.into());
        assert_eq!(
            error(&format!(
                r#"{{"job_id":"v:3","frame_number":3,"image_base64":"A",{video}}}"#
            )),
            invalid("`video_id` is required when `video` is present")
        );
        assert_eq!(
            error(&format!(
                r#"{{"job_id":"v:3","video_id":"v","image_base64":"A",{video}}}"#
            )),
            invalid("`frame_number` is required when `video` is present")
        );
        assert_eq!(
            error(&format!(
                r#"{{"job_id":"v:3","video_id":null,"frame_number":null,"image_base64":"A",{video}}}"#
            )),
            invalid("`video_id` is required when `video` is present")
        );
        assert_eq!(
            error(&format!(
                r#"{{"job_id":"v:10","video_id":"v","frame_number":10,"image_base64":"A",{video}}}"#
            )),
            invalid("`frame_number` must be below `video.frames` (10), got 10")
        );
        // A bad video object is reported before what it requires of the job.
        assert_eq!(
            error(r#"{"job_id":"v:3","image_base64":"A","video":{"frames":0,"fps":1}}"#),
            invalid("`video.frames` must be an integer >= 1, got 0")
        );
        // Without a video, neither is required.
        assert!(Job::parse(br#"{"job_id":"a","image_base64":"A"}"#, false, &limits()).is_ok());
    }

    #[test]
    fn a_rejected_tracked_frame_still_echoes_its_video() {
        // A frame that fails for another reason (here, no image) still says which video it
        // belongs to, so it can be counted for that video.
        let e = Job::parse(
            br#"{"job_id":"v:3","video_id":"v","frame_number":3,"video":{"frames":10,"fps":30,"reply_to":"p:results:o"}}"#,
            false,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.error, InputError::MissingImage);
        assert_eq!(
            e.echo,
            Echo {
                job_id: Some("v:3".into()),
                video_id: Some("v".into()),
                frame_number: Some(3),
                reply_to: None,
                video: Some(Video::new(10, 30.0).reply_to("p:results:o")),
            }
        );
        // So does one whose frame number is out of the video.
        let e = Job::parse(
            tracked(r#"{"frames":2,"fps":30}"#).as_bytes(),
            false,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.error.code(), ErrorCode::InvalidJob);
        assert_eq!(e.echo.video, Some(Video::new(2, 30.0)));
        assert_eq!(e.echo.frame_number, Some(3));
        // A bad video is not echoed; the rest still is.
        let e = Job::parse(
            tracked(r#"{"frames":10,"fps":"x"}"#).as_bytes(),
            false,
            &limits(),
        )
        .unwrap_err();
        assert_eq!(e.echo.video, None);
        assert_eq!(e.echo.job_id.as_deref(), Some("v:3"));
        assert_eq!(e.echo.video_id.as_deref(), Some("v"));
        // A parsed job echoes its video too.
        let raw = tracked(r#"{"frames":10,"fps":30}"#);
        let job = Job::parse(raw.as_bytes(), false, &limits()).unwrap();
        assert_eq!(job.echo().video, Some(Video::new(10, 30.0)));
    }

    #[test]
    fn json_faults_inside_the_video_are_invalid_json_as_serde_json_words_them() {
        /// What serde_json says of `raw` read as a job whose `video` is a struct with the
        /// video's fields (which stops at a repeated field, where this parser reads on).
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Tracked {
            video: VideoFields,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct VideoFields {
            frames: de::IgnoredAny,
            fps: de::IgnoredAny,
            reply_to: Option<de::IgnoredAny>,
        }
        for raw in [
            r#"{"video":{"frames":1,"fps":2,"frames":3}}"#,
            "{\"video\":{\"fps\":1,\n  \"frames\":2,\n \"f\\u0070s\"  : 3}}",
            r#"{"video":{"frames":1,"fps":2,"reply_to":"a","reply_to":"b"}}"#,
        ] {
            let serde = serde_json::from_str::<Tracked>(raw)
                .err()
                .unwrap()
                .to_string();
            assert_eq!(error(raw), InputError::InvalidJson(serde), "{raw}");
        }
        // A repeated `video` is one too, as any repeated key of the job.
        let twice = r#"{"job_id":"v:0","video_id":"v","frame_number":0,"image_base64":"A","video":{"frames":1,"fps":1},"video":null}"#;
        assert_eq!(error(twice).code(), ErrorCode::InvalidJson);
        // A lone surrogate in a key of the video, and a number out of range.
        let raw = tracked(r#"{"frames":1,"fps":1,"x\ud800":1}"#);
        let serde = serde_json::from_str::<serde_json::Value>(&raw)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(error(&raw), InputError::InvalidJson(serde));
        let e = error(&tracked(r#"{"frames":1,"fps":1e400}"#));
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        // Nesting inside the video counts towards serde_json's recursion limit.
        let deep = format!(
            r#"{{"frames":1,"fps":1,"x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let e = error(&tracked(&deep));
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }

    #[test]
    fn the_video_is_one_member_of_the_layout() {
        let raw = r#"{"job_id":"v:3","video":{ "frames":10, "fps":30,"frames_x":{"a":1} },"video_id":"v","frame_number":3}"#;
        assert_eq!(
            members(raw),
            pairs(&[
                ("job_id", r#""v:3""#),
                ("video", r#"{ "frames":10, "fps":30,"frames_x":{"a":1} }"#),
                ("video_id", r#""v""#),
                ("frame_number", "3"),
            ])
        );
        // A fault inside the video (a repeated key, a bad type) still leaves the layout.
        for raw in [
            r#"{"job_id":"a","video":{"frames":1,"frames":2},"x":1}"#,
            r#"{"job_id":"a","video":{"frames":"1"},"x":1}"#,
        ] {
            let (job, layout) = Job::parse_with_layout(raw.as_bytes(), false, &limits());
            assert!(job.is_err(), "{raw}");
            let names: Vec<String> = layout
                .expect("a JSON object has a layout")
                .members
                .iter()
                .map(|m| m.name(raw.as_bytes()).to_string())
                .collect();
            assert_eq!(names, ["job_id", "video", "x"], "{raw}");
        }
    }
}
