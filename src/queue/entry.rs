//! A delivered entry, and what it keeps of itself once its frame is decoded or when it is
//! dead-lettered: the frame and anything else large is dropped, what explains the job stays.

use std::borrow::Cow;

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
}

/// Most field pairs of an entry copied to its dead letter (Lua's `unpack` has a limit, and a
/// dead letter is for reading, not for keeping a hostile entry whole).
pub const DEAD_LETTER_FIELDS: usize = 64;

/// The most bytes an entry keeps of one field once its frame is dropped (an unreadable `job`
/// is cut to this, any other field longer than this is replaced by a note).
pub const KEPT_FIELD_BYTES: usize = 64 * 1024;

/// Values of unknown `job` keys longer than this (as JSON) are replaced by a note.
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
    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Drops the frame and anything else large: the `image` field, `image_base64` from the
    /// `job` JSON, values of unknown `job` keys over 1 KiB, and any other field over
    /// [`KEPT_FIELD_BYTES`] (both replaced by a note of their size); an unreadable `job` is cut
    /// to [`KEPT_FIELD_BYTES`]. What stays is what a dead letter needs to explain the job, at
    /// most tens of kilobytes: called once the frame is decoded, so an in-flight job holds its
    /// crops, not what its entry carried.
    pub fn strip_frame(&mut self) {
        self.fields = std::mem::take(&mut self.fields)
            .into_iter()
            .filter_map(|(k, v)| {
                let replaced = match kept(&k, &v)? {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(n) => Some(n),
                };
                Some((k, replaced.unwrap_or(v)))
            })
            .collect();
    }

    /// The field pairs a dead letter carries: without the frame (as [`Entry::strip_frame`]
    /// leaves them) unless `keep_image`, at most [`DEAD_LETTER_FIELDS`], plus `fields_dropped`
    /// when there were more. Borrowed where nothing is dropped.
    pub fn dead_letter_fields(&self, keep_image: bool) -> Vec<(&[u8], Cow<'_, [u8]>)> {
        let mut all = self.fields.iter().filter_map(|(k, v)| {
            let v = if keep_image {
                Cow::Borrowed(v.as_slice())
            } else {
                kept(k, v)?
            };
            Some((k.as_slice(), v))
        });
        let mut out: Vec<_> = all.by_ref().take(DEAD_LETTER_FIELDS).collect();
        let dropped = all.count();
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
}

/// What an entry keeps of field `k` once its frame is dropped (see [`Entry::strip_frame`]):
/// `None` drops the field, a borrowed value is kept as it is.
fn kept<'a>(k: &[u8], v: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    match k {
        b"image" => None,
        b"job" => Some(slim_job(v).map_or(Cow::Borrowed(v), Cow::Owned)),
        _ if v.len() > KEPT_FIELD_BYTES => Some(Cow::Owned(
            format!("<{} bytes dropped>", v.len()).into_bytes(),
        )),
        _ => Some(Cow::Borrowed(v)),
    }
}

/// The `job` JSON without its frame and without large unknown values (see
/// [`Entry::strip_frame`]); when still over [`KEPT_FIELD_BYTES`], its contract keys only plus
/// `dropped_keys`. `None` when there is nothing to drop.
fn slim_job(job: &[u8]) -> Option<Vec<u8>> {
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

    #[test]
    fn an_entry_keeps_tens_of_kilobytes_once_its_frame_is_dropped() {
        let filler = "x".repeat(5 << 20);
        let job = serde_json::json!({
            "job_id": "j", "boxes": [[0, 0, 10, 10]], "reply_to": "p:results:v",
            "image_base64": filler, "note": "small", "blob": filler,
        });
        let mut e = Entry {
            id: "1-0".into(),
            shard: 0,
            fields: vec![
                (b"job".to_vec(), job.to_string().into_bytes()),
                (b"image".to_vec(), vec![0; 1 << 20]),
                (b"pad".to_vec(), vec![b'p'; 1 << 20]),
            ],
            deliveries: 1,
        };
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
        let mut e = Entry {
            id: "2-0".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), serde_json::to_vec(&many).unwrap())],
            deliveries: 1,
        };
        e.strip_frame();
        let j = job_of(&e);
        assert_eq!(j["job_id"], "k");
        assert_eq!(j["dropped_keys"], 20_000);

        // Unreadable JSON is cut, small readable JSON is left as it is.
        let mut e = Entry {
            id: "3-0".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), vec![b'{'; 1 << 20])],
            deliveries: 1,
        };
        e.strip_frame();
        assert_eq!(size(&e), 3 + KEPT_FIELD_BYTES);
        let small = br#"{"job_id":"s"}"#.to_vec();
        let mut e = Entry {
            id: "4-0".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), small.clone())],
            deliveries: 1,
        };
        e.strip_frame();
        assert_eq!(e.field("job"), Some(&small[..]));
    }

    #[test]
    fn entry_ids_carry_the_enqueue_time() {
        let e = Entry {
            id: "1700000000123-4".into(),
            shard: 0,
            fields: vec![(b"job".to_vec(), b"{}".to_vec())],
            deliveries: 1,
        };
        assert_eq!(e.enqueued_ms(), Some(1_700_000_000_123));
        assert_eq!(e.field("job"), Some(&b"{}"[..]));
        assert_eq!(e.field("image"), None);
    }
}
