//! Decoding the replies of the commands and scripts [`super::Queue`] sends, each behind a
//! [`FromRedisValue`] type so a call site reads `let r: ReadReply = cmd.query_async(..)`.
//!
//! Stream replies are decoded leniently, entry by entry: one malformed entry (a hostile
//! producer's, or a RESP3 shape not foreseen) is logged or kept without its fields, and never
//! hides its neighbours. A reply that is not what the command returns at all decodes as empty.

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

/// One stream entry (`[id, [field, value, ...]]`) of a reply, decoded on its own: nothing in
/// one entry can spoil its neighbours. An entry that is not shaped like one is an error, with
/// its id when it has one.
fn decode_entry(v: Value) -> Result<Entry, Option<String>> {
    let mut parts = items(v).ok_or(None)?.into_iter();
    let id = parts.next().and_then(bytes_of).ok_or(None)?;
    let id = String::from_utf8(id).map_err(|_| None)?;
    let flat = parts
        .next()
        .and_then(items)
        .ok_or_else(|| Some(id.clone()))?;
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match (bytes_of(k), bytes_of(v)) {
            (Some(k), Some(v)) => fields.push((k, v)),
            _ => return Err(Some(id)),
        }
    }
    Ok(Entry::new(id, fields))
}

/// The entries of a list of entries, each decoded on its own. One whose fields cannot be
/// decoded is kept with no fields (it is then dead-lettered as `invalid_job`, not stranded);
/// one without even an id is logged and left out.
fn decode_entries(list: Value) -> Vec<Entry> {
    let Some(list) = items(list) else {
        tracing::warn!("a stream reply without a list of entries; ignored");
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|v| match decode_entry(v) {
            Ok(e) => Some(e),
            Err(Some(id)) => {
                tracing::warn!(entry = %id, "a stream entry whose fields cannot be decoded");
                Some(Entry::new(id, Vec::new()))
            }
            Err(None) => {
                tracing::warn!("a stream entry without an id in a reply; skipped");
                None
            }
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply (`nil`, or one `[stream, entries]` per stream; a map
/// of stream to entries in RESP3).
fn decode_read_reply(v: Value) -> Vec<Entry> {
    let lists: Vec<Value> = match v {
        // Its values are the lists of entries (flattening its pairs as `items` does would
        // take each list apart).
        Value::Map(streams) => streams.into_iter().map(|(_name, list)| list).collect(),
        v => items(v)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pair| items(pair)?.into_iter().nth(1))
            .collect(),
    };
    lists.into_iter().flat_map(decode_entries).collect()
}

/// The entries an `XREADGROUP` delivered (shard 0 until the caller says which).
#[derive(Debug, Default)]
pub(crate) struct ReadReply(pub Vec<Entry>);

impl FromRedisValue for ReadReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(ReadReply(decode_read_reply(v)))
    }
}

/// The entries an `XCLAIM` took from another consumer (shard 0 until the caller says which).
#[derive(Debug, Default)]
pub(crate) struct Claimed(pub Vec<Entry>);

impl FromRedisValue for Claimed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(Claimed(decode_entries(v)))
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

/// Whether an `XRANGE` reply is an empty list (the entry asked for is gone).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Gone(pub bool);

impl FromRedisValue for Gone {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(Gone(items(v).is_some_and(|v| v.is_empty())))
    }
}

/// What an atomic publish step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Result published, job acknowledged and deleted.
    Done,
    /// The job was no longer pending (another worker finished it): nothing written.
    NotPending,
    /// The reply key holds something other than a stream: nothing written.
    ReplyNotAStream,
}

impl FromRedisValue for Written {
    /// `publish.lua` and `dead_letter.lua` answer 1 (written), -1 (the reply key is not a
    /// stream) or 0 (the entry is no longer pending); anything but an integer is an error.
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Ok(match i64::from_redis_value(v)? {
            1 => Written::Done,
            -1 => Written::ReplyNotAStream,
            _ => Written::NotPending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn a_malformed_entry_spoils_nothing_but_itself() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("p:jobs"),
            Value::Array(vec![
                entry("1-0", &["job", "{}"]),
                // Fields that are not strings: kept without them, to be dead-lettered.
                Value::Array(vec![
                    bulk("2-0"),
                    Value::Array(vec![Value::Int(1), Value::Nil]),
                ]),
                // No id at all: left out.
                Value::Int(7),
                entry("3-0", &["job", "{}", "image", "x"]),
            ]),
        ])]);
        let ReadReply(got) = ReadReply::from_redis_value(reply).unwrap();
        let ids: Vec<_> = got.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0"]);
        assert!(got[1].fields.is_empty());
        assert_eq!(got[2].field("image"), Some(&b"x"[..]));
        // RESP3: the streams come as a map.
        let map = Value::Map(vec![(
            bulk("p:jobs"),
            Value::Array(vec![entry("4-0", &["job", "{}"]), entry("5-0", &[])]),
        )]);
        let ReadReply(got) = ReadReply::from_redis_value(map).unwrap();
        let ids: Vec<_> = got.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["4-0", "5-0"]);
        assert!(ReadReply::from_redis_value(Value::Nil)
            .unwrap()
            .0
            .is_empty());
        let claimed = Claimed::from_redis_value(Value::Array(vec![entry("5-0", &["a", "b"])]));
        assert_eq!(claimed.unwrap().0[0].field("a"), Some(&b"b"[..]));
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
            Gone::from_redis_value(Value::Array(vec![])).unwrap(),
            Gone(true)
        );
        assert_eq!(
            Gone::from_redis_value(Value::Array(vec![entry("1-0", &[])])).unwrap(),
            Gone(false)
        );
        assert_eq!(
            Written::from_redis_value(Value::Int(1)).unwrap(),
            Written::Done
        );
        assert_eq!(
            Written::from_redis_value(Value::Int(-1)).unwrap(),
            Written::ReplyNotAStream
        );
        assert_eq!(
            Written::from_redis_value(Value::Int(0)).unwrap(),
            Written::NotPending
        );
        assert!(Written::from_redis_value(Value::Array(vec![])).is_err());
    }
}
