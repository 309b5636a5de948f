//! Decoding the replies of the commands and scripts [`super::Queue`] sends, each behind a
//! [`FromRedisValue`] type so a call site reads `let r: ReadReply = cmd.query_async(..)`.
//!
//! Entries (`read.lua`'s answers) are decoded leniently, entry by entry: one malformed entry is
//! logged and kept without its fields, and never hides its neighbours.

use redis::{FromRedisValue, ParsingError, Value};

use super::Entry;

/// A value of a reply as bytes (bulk, simple or verbatim string).
pub(super) fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// The items of an array-like reply (RESP2 array, RESP3 set or push); a map's pairs are
/// flattened. `Nil` is empty.
pub(super) fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Map(m) => Some(m.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// What `read.lua` answers: entries, each bounded before it left Redis (see
/// [`Entry::bounded`]), or, for a claim, that the entry is gone from the stream (and was
/// acknowledged).
#[derive(Debug)]
pub(crate) enum Bounded {
    Entries(Vec<Entry>),
    Gone,
}

/// One entry of a `read.lua` answer: `[id, size, unsent, [name, value, length, ...]]`. One
/// that is not shaped like that is kept with no fields when it has an id (it is then
/// dead-lettered as `invalid_job`, not stranded).
fn decode_bounded(v: Value) -> Option<Entry> {
    let mut parts = items(v)?.into_iter();
    let id = String::from_utf8(parts.next().and_then(bytes_of)?).ok()?;
    let int = |v: Option<Value>| match v {
        Some(Value::Int(n)) => Some(n.max(0) as u64),
        _ => None,
    };
    let mut rest = || {
        let size = int(parts.next())?;
        let unsent = int(parts.next())?;
        let mut sent = Vec::new();
        let mut flat = parts.next().and_then(items)?.into_iter();
        while let Some(k) = flat.next() {
            let (v, len) = (flat.next().and_then(bytes_of)?, int(flat.next())?);
            sent.push((bytes_of(k)?, v, len));
        }
        Some((size, unsent, sent))
    };
    Some(match rest() {
        Some((size, unsent, sent)) => Entry::bounded(id, size, unsent, sent),
        None => {
            tracing::warn!(entry = %id, "a stream entry whose fields cannot be decoded");
            Entry::new(id, Vec::new())
        }
    })
}

impl FromRedisValue for Bounded {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let v = match v {
            Value::SimpleString(s) if s == "gone" => return Ok(Bounded::Gone),
            Value::BulkString(b) if b == b"gone" => return Ok(Bounded::Gone),
            v => v,
        };
        let list = items(v).ok_or_else(|| ParsingError::from("read.lua answered no list"))?;
        let entries = list
            .into_iter()
            .filter_map(|v| {
                let e = decode_bounded(v);
                if e.is_none() {
                    tracing::warn!("an entry without an id in a bounded read; skipped");
                }
                e
            })
            .collect();
        Ok(Bounded::Entries(entries))
    }
}

/// The head of an `XPENDING <key> <group> IDLE <ms> - + 1` reply: the oldest idle entry's id
/// and how often it was delivered (`None`: nothing idle that long).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct OldestPending(pub Option<(String, u64)>);

impl FromRedisValue for OldestPending {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        // [[id, consumer, idle ms, deliveries]]
        let first = items(v).and_then(|v| v.into_iter().next()).and_then(items);
        let Some(mut f) = first.map(Vec::into_iter) else {
            return Ok(OldestPending(None));
        };
        let id = f
            .next()
            .and_then(bytes_of)
            .and_then(|b| String::from_utf8(b).ok());
        let deliveries = f.nth(2).and_then(|v| match v {
            Value::Int(n) => Some(n.max(0) as u64),
            _ => None,
        });
        Ok(OldestPending(id.map(|id| (id, deliveries.unwrap_or(1)))))
    }
}

/// What an atomic publish step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Result published, job acknowledged and deleted.
    Done,
    /// The job was no longer pending (another worker finished it): nothing written.
    NotPending,
    /// The reply stream cannot take the result (a key of another type, denied by the ACL, its
    /// ids exhausted), and why: nothing written.
    ReplyUnusable(String),
    /// The frame's `video` object disagrees with the one its video was first recorded with
    /// (that one): nothing written.
    VideoDisagrees(String),
}

impl FromRedisValue for Written {
    /// `publish.lua` and `dead_letter.lua` answer 1 (written), 0 (the entry is no longer
    /// pending), `[-1, why]` (the reply stream cannot take it) or `[-2, video]` (the frame's
    /// video object disagrees with its video's); anything else is an error.
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        if let Value::Int(n) = v {
            return match n {
                1 => Ok(Written::Done),
                0 => Ok(Written::NotPending),
                n => Err(format!("a publish step answered {n}").into()),
            };
        }
        let mut parts = items(v)
            .ok_or_else(|| {
                ParsingError::from("a publish step answered neither 0, 1 nor [-1, why]")
            })?
            .into_iter();
        match (parts.next(), parts.next().and_then(bytes_of)) {
            (Some(Value::Int(-1)), Some(why)) => Ok(Written::ReplyUnusable(
                String::from_utf8_lossy(&why).into_owned(),
            )),
            (Some(Value::Int(-2)), Some(spec)) => Ok(Written::VideoDisagrees(
                String::from_utf8_lossy(&spec).into_owned(),
            )),
            _ => Err("a publish step answered neither 0, 1 nor [-1, why]".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A `read.lua` entry: `[id, size, unsent, [name, value, length, ...]]`.
    fn entry(id: &str, size: i64, fields: &[(&str, &str, i64)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(k, v, n)| [bulk(k), bulk(v), Value::Int(*n)])
            .collect();
        Value::Array(vec![
            bulk(id),
            Value::Int(size),
            Value::Int(0),
            Value::Array(flat),
        ])
    }

    #[test]
    fn a_malformed_entry_spoils_nothing_but_itself() {
        let reply = Value::Array(vec![
            entry("1-0", 9, &[("job", "{}", 2)]),
            // Fields that are not strings: kept without them, to be dead-lettered.
            Value::Array(vec![
                bulk("2-0"),
                Value::Int(5),
                Value::Int(0),
                Value::Array(vec![Value::Int(1), Value::Nil, Value::Int(1)]),
            ]),
            // No id at all: left out.
            Value::Int(7),
            entry("3-0", 15, &[("job", "{}", 2), ("image", "x", 1)]),
        ]);
        let Bounded::Entries(got) = Bounded::from_redis_value(reply).unwrap() else {
            panic!("entries")
        };
        let ids: Vec<_> = got.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0"]);
        assert!(got[1].fields.is_empty());
        assert_eq!(got[2].field("image"), Some(&b"x"[..]));
        assert_eq!(got[2].size, 15);
        assert!(matches!(
            Bounded::from_redis_value(Value::Array(vec![])).unwrap(),
            Bounded::Entries(e) if e.is_empty()
        ));
        assert!(matches!(
            Bounded::from_redis_value(bulk("gone")).unwrap(),
            Bounded::Gone
        ));
        assert!(Bounded::from_redis_value(Value::Int(3)).is_err());
    }

    #[test]
    fn values_longer_than_sent_are_cut_and_noted() {
        let reply = Value::Array(vec![entry(
            "1-0",
            400_000_123,
            &[
                ("job", "{\"job_id\":\"a\",\"pad\":\"zz", 90_000_000),
                ("image", "", 30_000_000),
                ("side", "", 200_000_000),
                ("small", "kept", 4),
            ],
        )]);
        let Bounded::Entries(got) = Bounded::from_redis_value(reply).unwrap() else {
            panic!("entries")
        };
        let e = &got[0];
        assert_eq!(e.size, 400_000_123);
        assert_eq!(e.cut_job, Some(90_000_000));
        assert_eq!(e.cut_image, Some(30_000_000));
        assert_eq!(e.field("side"), Some(&b"<200000000 bytes dropped>"[..]));
        assert_eq!(e.field("small"), Some(&b"kept"[..]));
        let parsed = e.parse_job(false, &hmr2_client::Limits::default()).unwrap();
        let err = parsed.unwrap_err();
        assert_eq!(err.echo.job_id.as_deref(), Some("a"), "read from the head");
        assert!(
            err.error.to_string().contains("90000000 bytes"),
            "{}",
            err.error
        );
    }

    #[test]
    fn pending_heads_and_script_answers_decode() {
        let head = Value::Array(vec![Value::Array(vec![
            bulk("7-1"),
            bulk("w1"),
            Value::Int(90_000),
            Value::Int(3),
        ])]);
        assert_eq!(
            OldestPending::from_redis_value(head).unwrap(),
            OldestPending(Some(("7-1".into(), 3)))
        );
        assert_eq!(
            OldestPending::from_redis_value(Value::Array(vec![])).unwrap(),
            OldestPending(None)
        );
        assert_eq!(
            Written::from_redis_value(Value::Int(1)).unwrap(),
            Written::Done
        );
        assert_eq!(
            Written::from_redis_value(Value::Array(vec![Value::Int(-1), bulk("a hash")])).unwrap(),
            Written::ReplyUnusable("a hash".into())
        );
        assert_eq!(
            Written::from_redis_value(Value::Int(0)).unwrap(),
            Written::NotPending
        );
        assert!(Written::from_redis_value(Value::Array(vec![])).is_err());
        assert!(Written::from_redis_value(Value::Int(-1)).is_err());
        assert!(Written::from_redis_value(Value::Int(7)).is_err());
    }
}
