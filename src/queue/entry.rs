//! A delivered entry, and what it keeps of itself once its frame is decoded or when it is
//! dead-lettered: the frame and anything else large is dropped, what explains the job stays.
//! The `job` JSON is slimmed by splicing its text where the one parse that read it
//! ([`Entry::parse_job`]) found its members: it is never read a second time.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

use hmr2_client::{InputError, Job, JobLayout, Limits, Member, ParseError};

/// One delivered job entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// The shard it was read from (0 when the queue is not sharded).
    pub shard: usize,
    /// Every field of the entry, names and values as Redis holds them (binary-safe: a field
    /// name that is not UTF-8 spoils nothing but its own entry), for the dead-letter stream.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many times the group delivered it (1 for a fresh read).
    pub deliveries: u64,
    /// The bytes of its field names and values as Redis holds them (what deleting it frees),
    /// whatever the worker was sent of them.
    pub size: u64,
    /// The length of the `job` field when it is over `limits.max_job_bytes`: then only its
    /// first [`KEPT_FIELD_BYTES`] were sent (enough to read the `job_id` and `reply_to` of most
    /// jobs, to answer them).
    pub(crate) cut_job: Option<u64>,
    /// The length of the `image` field when it is over `limits.max_image_bytes`: then it was
    /// not sent (its value is a note of its size).
    pub(crate) cut_image: Option<u64>,
    /// Fields not sent at all (past [`DEAD_LETTER_FIELDS`] besides `job` and `image`).
    pub(crate) unsent_fields: u64,
    /// Where the members of the (first) `job` field are written, once [`Entry::parse_job`]
    /// has read it: set through `&self` because the parsed job borrows the entry for as long
    /// as it is used.
    job_layout: OnceLock<JobLayout>,
    /// The `job` field is already what [`Entry::strip_frame`] keeps of it.
    job_slim: bool,
}

/// Most field pairs of an entry copied to its dead letter (Lua's `unpack` has a limit, and a
/// dead letter is for reading, not for keeping a hostile entry whole).
pub(crate) const DEAD_LETTER_FIELDS: usize = 64;

/// The most bytes an entry keeps of one field once its frame is dropped (an unreadable `job`
/// is cut to this, any other field longer than this is replaced by a note).
pub(crate) const KEPT_FIELD_BYTES: usize = 16 * 1024;

/// The most bytes of a field name the worker is sent (a longer one is cut, with a note of its
/// length).
pub(crate) const KEPT_NAME_BYTES: usize = 256;

/// Values of unknown `job` keys longer than this (as written) are replaced by a note.
const KEPT_UNKNOWN_VALUE_BYTES: usize = 1024;

/// The `job` keys of the wire contract (DESIGN §3), kept whole.
const JOB_KEYS: &[&str] = &[
    "v",
    "job_id",
    "video_id",
    "frame_number",
    "boxes",
    "reply_to",
    "include",
];

impl Entry {
    /// A fresh entry (shard 0, delivered once) with these fields.
    pub fn new(id: impl Into<String>, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let size = fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() as u64;
        Entry {
            id: id.into(),
            shard: 0,
            fields,
            deliveries: 1,
            size,
            cut_job: None,
            cut_image: None,
            unsent_fields: 0,
            job_layout: OnceLock::new(),
            job_slim: false,
        }
    }

    /// An entry as the bounded read (`read.lua`) sends it: `fields` as (name, value, length
    /// of the value in Redis), where a value shorter than its length was cut; `size` the bytes
    /// of the whole entry in Redis; `unsent` the fields not sent at all. A cut `job` keeps
    /// its head; any other cut value becomes a note of its size.
    pub(crate) fn bounded(
        id: String,
        size: u64,
        unsent: u64,
        sent: impl IntoIterator<Item = (Vec<u8>, Vec<u8>, u64)>,
    ) -> Self {
        let mut e = Entry::new(id, Vec::new());
        for (k, v, len) in sent {
            let v = if (v.len() as u64) < len {
                match k.as_slice() {
                    b"job" if e.cut_job.is_none() => {
                        e.cut_job = Some(len);
                        v
                    }
                    b"image" if e.cut_image.is_none() => {
                        e.cut_image = Some(len);
                        format!("<{len} bytes dropped>").into_bytes()
                    }
                    _ => format!("<{len} bytes dropped>").into_bytes(),
                }
            } else {
                v
            };
            e.fields.push((k, v));
        }
        e.size = size;
        e.unsent_fields = unsent;
        e
    }

    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Parses the `job` field ([`Job::parse`]; `None` when there is none) and keeps where its
    /// members are written, valid job or not: dropping its frame later
    /// ([`Entry::strip_frame`], [`Entry::dead_letter_fields`]) then splices its text instead
    /// of parsing it a second time. `has_raw_image`: whether the entry carries its image in an
    /// `image` field.
    pub fn parse_job(
        &self,
        has_raw_image: bool,
        limits: &Limits,
    ) -> Option<Result<Job<'_>, ParseError>> {
        let raw = self.field("job")?;
        if let Some(len) = self.cut_job {
            // Only its head was sent: read what its whole members say of the job, to answer
            // it (on its own `reply_to` when that comes before the cut).
            let head = whole_members(raw);
            let (head, _) = Job::parse_with_layout(&head, has_raw_image, limits);
            let echo = match head {
                Ok(j) => j.echo(),
                Err(e) => e.echo,
            };
            let error = InputError::InvalidJob(format!(
                "the job field is {len} bytes, over limits.max_job_bytes ({})",
                limits.max_job_bytes
            ));
            return Some(Err(ParseError { error, echo }));
        }
        let (job, layout) = Job::parse_with_layout(raw, has_raw_image, limits);
        if let Some(layout) = layout {
            // Parsed before: the same text, the same layout.
            let _ = self.job_layout.set(layout);
        }
        Some(job)
    }

    /// Drops the frame and anything else large: the `image` field, `image_base64` from the
    /// `job` JSON, values of unknown `job` keys over 1 KiB, and any other field over
    /// [`KEPT_FIELD_BYTES`] (both replaced by a note of their size); a `job` that is not a JSON
    /// object (or was not parsed, see [`Entry::parse_job`]) is cut to [`KEPT_FIELD_BYTES`].
    /// What stays is what a dead letter needs to explain the job, at most tens of kilobytes:
    /// called once the frame is decoded, so an in-flight job holds its crops, not what its
    /// entry carried.
    pub fn strip_frame(&mut self) {
        let layout = self.job_layout.take();
        let mut job = self.job_text(layout.as_ref());
        self.fields = std::mem::take(&mut self.fields)
            .into_iter()
            .filter_map(|(k, v)| {
                let replaced = match kept(&k, &v, &mut job)? {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(n) => Some(n),
                };
                Some((k, replaced.unwrap_or(v)))
            })
            .collect();
        self.job_slim = true;
    }

    /// The field pairs a dead letter carries: without the frame (as [`Entry::strip_frame`]
    /// leaves them) unless `keep_image`, at most [`DEAD_LETTER_FIELDS`], plus `fields_dropped`
    /// when there were more. Borrowed where nothing is dropped.
    pub fn dead_letter_fields(&self, keep_image: bool) -> Vec<(&[u8], Cow<'_, [u8]>)> {
        let mut job = self.job_text(self.job_layout.get());
        let mut all = self.fields.iter().filter_map(|(k, v)| {
            let v = if keep_image {
                Cow::Borrowed(v.as_slice())
            } else {
                kept(k, v, &mut job)?
            };
            Some((k.as_slice(), v))
        });
        let mut out: Vec<_> = all.by_ref().take(DEAD_LETTER_FIELDS).collect();
        let dropped = all.count() as u64 + self.unsent_fields;
        if dropped > 0 {
            out.push((
                &b"fields_dropped"[..],
                dropped.to_string().into_bytes().into(),
            ));
        }
        out
    }

    /// Milliseconds since the epoch at which the entry was added (from its id).
    pub fn enqueued_ms(&self) -> Option<u64> {
        self.id.split('-').next()?.parse().ok()
    }

    /// What is known of the `job` text when its frame is dropped.
    fn job_text<'l>(&self, layout: Option<&'l JobLayout>) -> JobText<'l> {
        match layout {
            _ if self.job_slim => JobText::Slim,
            Some(layout) => JobText::Laid(layout),
            None => JobText::Unread,
        }
    }
}

/// What is known of the `job` text when its frame is dropped.
#[derive(Clone, Copy)]
enum JobText<'l> {
    /// Where its members are written (of the first `job` field: the one parsed).
    Laid(&'l JobLayout),
    /// Already slimmed: kept as it is.
    Slim,
    /// Not a JSON object, or never parsed.
    Unread,
}

/// What an entry keeps of field `k` once its frame is dropped (see [`Entry::strip_frame`]):
/// `None` drops the field, a borrowed value is kept as it is. `job` is what is known of the
/// next `job` field's text.
fn kept<'a>(k: &[u8], v: &'a [u8], job: &mut JobText<'_>) -> Option<Cow<'a, [u8]>> {
    match k {
        b"image" => None,
        b"job" => {
            // A second `job` field (Redis lets a producer repeat one) was never parsed.
            let text = std::mem::replace(job, JobText::Unread);
            let slim = match text {
                JobText::Slim => None,
                JobText::Laid(layout) if layout.len == v.len() => slim_job(v, layout),
                _ => (v.len() > KEPT_FIELD_BYTES).then(|| v[..KEPT_FIELD_BYTES].to_vec()),
            };
            Some(slim.map_or(Cow::Borrowed(v), Cow::Owned))
        }
        _ if v.len() > KEPT_FIELD_BYTES => Some(Cow::Owned(
            format!("<{} bytes dropped>", v.len()).into_bytes(),
        )),
        _ => Some(Cow::Borrowed(v)),
    }
}

/// The `job` JSON without its frame and without large unknown values (see
/// [`Entry::strip_frame`]); when still over [`KEPT_FIELD_BYTES`], its contract keys only plus
/// `dropped_keys` (how many other keys there were). `None` when there is nothing to drop.
///
/// Spliced from the text where `layout` says its members are: nothing is parsed again, and
/// what is kept is kept as written. A key written more than once keeps its last value, as a
/// JSON reader keeps it.
fn slim_job(job: &[u8], layout: &JobLayout) -> Option<Vec<u8>> {
    let members = last_of_each_key(job, layout);
    let mut changed = members.iter().any(|(name, _)| *name == "image_base64");
    let mut out = Vec::with_capacity(job.len().min(KEPT_FIELD_BYTES) + 64);
    out.push(b'{');
    for (name, m) in members.iter().filter(|(name, _)| *name != "image_base64") {
        let value = &job[m.value.clone()];
        if JOB_KEYS.contains(name) || value.len() <= KEPT_UNKNOWN_VALUE_BYTES {
            push_member(&mut out, &job[m.key.clone()], value);
        } else {
            let note = format!("\"<{} bytes dropped>\"", value.len());
            push_member(&mut out, &job[m.key.clone()], note.as_bytes());
            changed = true;
        }
        if out.len() > KEPT_FIELD_BYTES {
            break;
        }
    }
    out.push(b'}');
    if out.len() > KEPT_FIELD_BYTES {
        out.clear();
        out.push(b'{');
        let mut dropped = 0;
        for (name, m) in &members {
            if JOB_KEYS.contains(name) {
                push_member(&mut out, &job[m.key.clone()], &job[m.value.clone()]);
            } else if *name != "image_base64" {
                dropped += 1;
            }
        }
        push_member(
            &mut out,
            b"\"dropped_keys\"",
            dropped.to_string().as_bytes(),
        );
        out.push(b'}');
        changed = true;
    }
    changed.then_some(out)
}

/// The members of the job, each key once with its last value, in the order written; with
/// their keys unescaped.
fn last_of_each_key<'a>(job: &'a [u8], layout: &'a JobLayout) -> Vec<(&'a str, &'a Member)> {
    let mut seen = HashSet::with_capacity(layout.members.len());
    let mut members: Vec<_> = layout
        .members
        .iter()
        .rev()
        .map(|m| (m.name(job), m))
        .filter(|(name, _)| seen.insert(*name))
        .collect();
    members.reverse();
    members
}

/// The head of a JSON object cut anywhere, closed after its last whole top-level member
/// (`{}` when there is none): what can be read of a `job` field sent cut.
fn whole_members(head: &[u8]) -> Vec<u8> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut end = None;
    for (i, &b) in head.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => end = Some(i),
            _ => {}
        }
    }
    match end {
        Some(i) => {
            let mut out = head[..i].to_vec();
            out.push(b'}');
            out
        }
        None => b"{}".to_vec(),
    }
}

/// Appends `"key":value` to an object being written (a comma first unless it is the first).
fn push_member(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(key);
    out.push(b':');
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes held by the entry's field names and values.
    fn size(e: &Entry) -> usize {
        e.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn job_of(e: &Entry) -> serde_json::Value {
        serde_json::from_slice(e.field("job").unwrap()).unwrap()
    }

    /// An entry whose job was parsed, as the worker parses it before it drops the frame.
    fn parsed(id: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Entry {
        let e = Entry::new(id, fields);
        let _ = e.parse_job(true, &Limits::default());
        e
    }

    #[test]
    fn a_cut_job_is_read_up_to_its_last_whole_member() {
        let cut = br#"{"job_id":"a,b","boxes":[[1,2,3,4]],"reply_to":"p:results:x","pad":"zz"#;
        assert_eq!(
            whole_members(cut),
            br#"{"job_id":"a,b","boxes":[[1,2,3,4]],"reply_to":"p:results:x"}"#
        );
        assert_eq!(whole_members(br#"{"job_id":"a"#), b"{}");
        assert_eq!(
            whole_members(br#"{"a":"x\",y","b":1,"c"#),
            br#"{"a":"x\",y","b":1}"#
        );
    }

    #[test]
    fn an_entry_keeps_tens_of_kilobytes_once_its_frame_is_dropped() {
        let filler = "x".repeat(5 << 20);
        let job = serde_json::json!({
            "job_id": "j", "boxes": [[0, 0, 10, 10]], "reply_to": "p:results:v",
            "image_base64": filler, "note": "small", "blob": filler,
        });
        let mut e = parsed(
            "1-0",
            vec![
                (b"job".to_vec(), job.to_string().into_bytes()),
                (b"image".to_vec(), vec![0; 1 << 20]),
                (b"pad".to_vec(), vec![b'p'; 1 << 20]),
            ],
        );
        e.strip_frame();
        assert!(size(&e) < 2 * KEPT_FIELD_BYTES, "{} bytes kept", size(&e));
        assert_eq!(e.field("image"), None);
        let j = job_of(&e);
        assert_eq!(j["job_id"], "j");
        assert_eq!(j["reply_to"], "p:results:v");
        assert_eq!(j["note"], "small");
        assert!(j.get("image_base64").is_none());
        assert!(j["blob"].as_str().unwrap().contains("bytes dropped"));
        assert!(String::from_utf8_lossy(e.field("pad").unwrap()).contains("bytes dropped"));

        // Many small unknown keys: only the contract's keys stay.
        let mut many = serde_json::Map::new();
        many.insert("job_id".into(), "k".into());
        for i in 0..20_000 {
            many.insert(format!("k{i}"), "0123456789".into());
        }
        let mut e = parsed(
            "2-0",
            vec![(b"job".to_vec(), serde_json::to_vec(&many).unwrap())],
        );
        e.strip_frame();
        let j = job_of(&e);
        assert_eq!(j["job_id"], "k");
        assert_eq!(j["dropped_keys"], 20_000);

        // Unreadable JSON is cut, small readable JSON is left as it is.
        let mut e = parsed("3-0", vec![(b"job".to_vec(), vec![b'{'; 1 << 20])]);
        e.strip_frame();
        assert_eq!(size(&e), 3 + KEPT_FIELD_BYTES);
        let small = br#"{"job_id":"s"}"#.to_vec();
        let mut e = parsed("4-0", vec![(b"job".to_vec(), small.clone())]);
        e.strip_frame();
        assert_eq!(e.field("job"), Some(&small[..]));
    }

    #[test]
    fn entry_ids_carry_the_enqueue_time() {
        let e = Entry::new("1700000000123-4", vec![(b"job".to_vec(), b"{}".to_vec())]);
        assert_eq!(e.enqueued_ms(), Some(1_700_000_000_123));
        assert_eq!(e.field("job"), Some(&b"{}"[..]));
        assert_eq!(e.field("image"), None);
    }

    /// What the worker kept of a job before jobs were laid out: the job read whole into a
    /// map (a repeated key keeps its last value), slimmed and written back.
    fn slim_by_reading_it_whole(job: &[u8]) -> Option<Vec<u8>> {
        use serde_json::{Map, Value};
        let Ok(mut map) = serde_json::from_slice::<Map<String, Value>>(job) else {
            return (job.len() > KEPT_FIELD_BYTES).then(|| job[..KEPT_FIELD_BYTES].to_vec());
        };
        let mut changed = map.remove("image_base64").is_some();
        for (k, v) in map.iter_mut() {
            if JOB_KEYS.contains(&k.as_str()) {
                continue;
            }
            let n = serde_json::to_vec(v).map_or(0, |s| s.len());
            if n > KEPT_UNKNOWN_VALUE_BYTES {
                *v = Value::String(format!("<{n} bytes dropped>"));
                changed = true;
            }
        }
        let mut out = serde_json::to_vec(&map).ok()?;
        if out.len() > KEPT_FIELD_BYTES {
            let before = map.len();
            map.retain(|k, _| JOB_KEYS.contains(&k.as_str()));
            let dropped = before - map.len();
            map.insert("dropped_keys".into(), Value::from(dropped));
            out = serde_json::to_vec(&map).ok()?;
            changed = true;
        }
        changed.then_some(out)
    }

    /// What a dead letter carries of `job` when it is spliced from its layout.
    fn spliced(job: &[u8]) -> Option<Vec<u8>> {
        let e = parsed("1-0", vec![(b"job".to_vec(), job.to_vec())]);
        let fields = e.dead_letter_fields(false);
        assert_eq!(fields.len(), 1);
        match &fields[0].1 {
            Cow::Borrowed(kept) => {
                assert_eq!(*kept, job);
                None
            }
            Cow::Owned(slim) => Some(slim.clone()),
        }
    }

    #[test]
    fn splicing_keeps_what_reading_the_job_whole_kept() {
        let big = "b".repeat(2000);
        let image = "QUJD".repeat(1 << 14);
        let keys: String = (0..9000).map(|i| format!(r#","k{i}":"0123456""#)).collect();
        let nested = format!(r#"{{"a":[1,{{"b":"{big}"}}],"c":null}}"#);
        let shapes = [
            format!(r#"{{"job_id":"a","image_base64":"{image}","boxes":[[1,2,3,4]]}}"#),
            // The image in the middle, under an escaped key, with escapes and whitespace
            // around.
            format!(
                "{{ \"v\" : 1,\n \"image\\u005fbase64\" : \"{image}\" , \"job\\u005fid\":\"\\u0061\\/b\",\"note\":\"\\u00e9\\n\" }}"
            ),
            // Unknown values nested, large and small; a contract value over the note's size.
            format!(
                r#"{{"trace":{nested},"small":{{"x":[1,2]}},"image_base64":"A","job_id":"j","include":["{}"]}}"#,
                "vertices\",\"".repeat(200) + "vertices"
            ),
            // A large unknown string, number and array.
            format!(r#"{{"job_id":"j","s":"{big}","n":1.5e3,"arr":[{}0]}}"#, "1,".repeat(600)),
            // Repeated keys: the last value counts.
            format!(
                r#"{{"job_id":"first","x":"{big}","image_base64":"A","x":1,"job_id":"last"}}"#
            ),
            // Too many small unknown keys: the contract's keys and a count.
            format!(r#"{{"job_id":"j","image_base64":"A"{keys},"dropped_keys":1,"boxes":[]}}"#),
            format!(r#"{{"job_id":"j"{keys}}}"#),
            // Nothing to drop: kept as it is.
            r#"{"job_id":"a","boxes":[[1,2,3,4]],"extra":{"k":"v"}}"#.into(),
            r#"{"job_id":"a","job_id":"b"}"#.into(),
            "{}".into(),
        ];
        for job in &shapes {
            let old = slim_by_reading_it_whole(job.as_bytes());
            let new = spliced(job.as_bytes());
            let short = &job[..job.len().min(120)];
            assert_eq!(old.is_some(), new.is_some(), "{short}");
            let (Some(old), Some(new)) = (old, new) else {
                continue;
            };
            let read = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            assert_eq!(read(&new), read(&old), "{short}");
            assert!(!new.windows(8).any(|w| w == b"QUJDQUJD"), "{short}");
        }
    }

    #[test]
    fn a_note_gives_the_size_of_the_value_as_written() {
        let spaced = format!("[{}1]", "1, ".repeat(400));
        let job = format!(r#"{{"job_id":"a","image_base64":"A","blob":{spaced}}}"#);
        let slim = spliced(job.as_bytes()).unwrap();
        let expected = format!(
            r#"{{"job_id":"a","blob":"<{} bytes dropped>"}}"#,
            spaced.len()
        );
        assert_eq!(String::from_utf8(slim).unwrap(), expected);
    }

    #[test]
    fn a_stripped_job_is_kept_as_it_is_and_an_unparsed_one_is_cut() {
        let job = format!(
            r#"{{"job_id":"a","image_base64":"{}","note":"n"}}"#,
            "A".repeat(KEPT_FIELD_BYTES)
        );
        let mut e = parsed("1-0", vec![(b"job".to_vec(), job.clone().into_bytes())]);
        e.strip_frame();
        let slim = br#"{"job_id":"a","note":"n"}"#;
        assert_eq!(e.field("job"), Some(&slim[..]));
        let fields = e.dead_letter_fields(false);
        assert!(matches!(&fields[0].1, Cow::Borrowed(b) if *b == slim));
        // Never parsed (or not a JSON object): cut, not read.
        let e = Entry::new("2-0", vec![(b"job".to_vec(), job.clone().into_bytes())]);
        assert_eq!(e.dead_letter_fields(false)[0].1.len(), KEPT_FIELD_BYTES);
        // A second `job` field is not the one parsed: cut too.
        let e = parsed(
            "3-0",
            vec![
                (b"job".to_vec(), job.clone().into_bytes()),
                (b"job".to_vec(), job.into_bytes()),
            ],
        );
        let fields = e.dead_letter_fields(false);
        assert_eq!(fields[0].1.as_ref(), slim);
        assert_eq!(fields[1].1.len(), KEPT_FIELD_BYTES);
        // A rejected job (no job_id) is laid out all the same.
        let bad = format!(r#"{{"image_base64":"{}","v":7}}"#, "A".repeat(1 << 20));
        let e = Entry::new("4-0", vec![(b"job".to_vec(), bad.clone().into_bytes())]);
        assert!(e.parse_job(false, &Limits::default()).unwrap().is_err());
        assert_eq!(e.dead_letter_fields(false)[0].1.as_ref(), br#"{"v":7}"#);
        // keep_image keeps every byte.
        assert_eq!(e.dead_letter_fields(true)[0].1.as_ref(), bad.as_bytes());
    }
}
