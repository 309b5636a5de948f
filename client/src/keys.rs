//! Every Redis key and name of the contract, built in one place from the prefix (DESIGN §3),
//! and the queue's split into shards for Redis Cluster (DESIGN §11).
//!
//! ## Shards
//! With `queue.shards = N` (or on Redis Cluster) the queue is N independent shards. Shard `k`
//! keeps its keys under the hash tag `{<prefix>:<k>}`, so each shard lives in one cluster slot
//! (the atomic publish step touches one slot) while the cluster spreads the shards over its
//! masters: `{hmr2:0}:jobs`, `{hmr2:0}:results`, `{hmr2:0}:dead`, group `{hmr2:0}-workers`.
//! With one shard and no cluster the keys are the unsharded `hmr2:jobs` etc.
//!
//! ## Videos
//! Tracked videos (DESIGN §13) keep their state on the video's shard, beside its frames' jobs,
//! under the same tag (`<tag>` is `{<prefix>:<k>}` on shard k, the prefix when unsharded):
//! - `<tag>:videos`: the stream of tracking jobs (one per complete video), consumer group
//!   `<tag>-trackers`;
//! - `<tag>:videos:open`: a sorted set of the videos that have frames recorded and no output
//!   yet (for their expiry);
//! - `<tag>:video:<video_id>`: one video's recorded state ([`Keys::video_state`]);
//! - `<tag>:video-frames:<video_id>`: its recorded frames ([`Keys::video_frames`]; another
//!   word than `video`, so no video id can name another video's frames or state);
//! - the video's output stream: the `video` object's `reply_to` under the same rule as a job's,
//!   by default `<results>:video:<video_id>` ([`Keys::video_output`]).
//!
//! ## Routing
//! A producer puts a job on shard [`shard_of`]`(video_id, N)` (or of `job_id` when the job has
//! no `video_id`): CRC-32 (ISO-HDLC, as zlib's `crc32`) of the UTF-8 bytes, modulo N. All the
//! frames of a video land on one shard, so a results reader for a video reads one stream. In
//! Python: `zlib.crc32((video_id or job_id).encode()) % shards`.

/// Every key and name of one shard of the queue (all of the queue when it is not sharded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Which shard these are the keys of (0 when the queue is not sharded).
    pub shard: usize,
    /// What every key of the shard but `model` starts with: the prefix (`hmr2`), or the
    /// shard's hash tag (`{hmr2:3}`).
    pub tag: String,
    /// `{prefix}:jobs`: the job stream.
    pub jobs: String,
    /// `{prefix}:results`: the default reply stream.
    pub results: String,
    /// `{prefix}:dead`: the dead-letter stream.
    pub dead: String,
    /// `{prefix}-workers`: the consumer group on the job stream.
    pub group: String,
    /// `{prefix}:model`: a hash the workers fill at start-up with what renderers need besides
    /// the results: `meta`, `faces`, `parents`, `joint_names`, `keypoint_names`, `topology`
    /// (JSON strings), and `detector` when one is configured. One per queue, not per shard.
    pub model: String,
    /// `{prefix}:videos`: the stream of tracking jobs, one per complete video (DESIGN §13).
    pub videos: String,
    /// `{prefix}-trackers`: the consumer group on the tracking-job stream.
    pub trackers: String,
    /// `{prefix}:videos:open`: a sorted set of the videos with frames recorded and no output
    /// written yet.
    pub videos_open: String,
}

impl Keys {
    /// Keys for `prefix`, not sharded. With a prefix in braces (`{hmr2}`) the three streams
    /// share a Redis Cluster hash slot.
    pub fn new(prefix: &str) -> Self {
        Keys {
            shard: 0,
            tag: prefix.to_string(),
            jobs: format!("{prefix}:jobs"),
            results: format!("{prefix}:results"),
            dead: format!("{prefix}:dead"),
            group: format!("{prefix}-workers"),
            model: format!("{prefix}:model"),
            videos: format!("{prefix}:videos"),
            trackers: format!("{prefix}-trackers"),
            videos_open: format!("{prefix}:videos:open"),
        }
    }

    /// Keys of shard `k` of `prefix`: all under the hash tag `{<prefix>:<k>}`.
    pub fn shard(prefix: &str, k: usize) -> Self {
        let tag = format!("{{{prefix}:{k}}}");
        Keys {
            shard: k,
            model: format!("{prefix}:model"),
            ..Keys::new(&tag)
        }
    }

    /// Whether a job may name `reply_to`: this shard's results stream (`{prefix}:results`, or
    /// `{<prefix>:<k>}:results` on shard k; DESIGN §3, §11) or a stream under it
    /// (`{prefix}:results:...`), so an ACL on the prefix covers it, no other stream can be
    /// written or trimmed (another tenant's job stream, or that of a tenant whose prefix merely
    /// starts with this one's results stream, such as `hmr2:results-b`), and the result is
    /// written in the job's own cluster slot. Anything else is `invalid_job`. Reply streams
    /// are not private within one prefix: any producer of the prefix may name any of them.
    pub fn accepts_reply_to(&self, reply_to: &str) -> bool {
        reply_to
            .strip_prefix(self.results.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
    }

    /// `{prefix}:video:<video_id>`: the recorded state of the video `video_id` (its length,
    /// frame rate and output stream, as its first frame said).
    pub fn video_state(&self, video_id: &str) -> String {
        format!("{}:video:{video_id}", self.tag)
    }

    /// `{prefix}:video-frames:<video_id>`: the frames recorded for the video `video_id`.
    pub fn video_frames(&self, video_id: &str) -> String {
        format!("{}:video-frames:{video_id}", self.tag)
    }

    /// The stream the video `video_id`'s tracked output goes to: `reply_to` (the `video`
    /// object's) when [`Keys::accepts_reply_to`] accepts it, the default
    /// `<results>:video:<video_id>` when there is none, and `None` when `reply_to` is refused
    /// (the frames of such a video are `invalid_job`).
    pub fn video_output(&self, video_id: &str, reply_to: Option<&str>) -> Option<String> {
        match reply_to {
            None => Some(format!("{}:video:{video_id}", self.results)),
            Some(r) if self.accepts_reply_to(r) => Some(r.to_string()),
            Some(_) => None,
        }
    }

    /// The stream a job's result goes to: its `reply_to` when [`Keys::accepts_reply_to`], else
    /// the default results stream (where the `invalid_job` answer to a bad one goes).
    pub fn reply_stream<'a>(&'a self, reply_to: Option<&'a str>) -> &'a str {
        match reply_to {
            Some(r) if self.accepts_reply_to(r) => r,
            _ => &self.results,
        }
    }
}

/// The shard of a job whose routing key (its `video_id`, else its `job_id`) is `key`, on a
/// queue of `shards` shards: CRC-32/ISO-HDLC of the UTF-8 bytes, modulo `shards`. Stable
/// across versions, languages and machines (Python: `zlib.crc32(key.encode()) % shards`).
pub fn shard_of(key: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    (crc32fast::hash(key.as_bytes()) as u64 % shards as u64) as usize
}

/// The routing key of a job: its `video_id` when it has one, else its `job_id`.
pub fn routing_key<'a>(video_id: Option<&'a str>, job_id: &'a str) -> &'a str {
    video_id.unwrap_or(job_id)
}

/// Where a video's keys are: given one shard's [`Keys`], those; given a whole [`Layout`], the
/// video's shard's ([`shard_of`] its `video_id`). The producer's video calls take either.
pub trait VideoShard {
    /// The keys of the shard that the video `video_id` lives on.
    fn video_keys(&self, video_id: &str) -> &Keys;
}

impl VideoShard for Keys {
    fn video_keys(&self, _video_id: &str) -> &Keys {
        self
    }
}

impl VideoShard for Layout {
    fn video_keys(&self, video_id: &str) -> &Keys {
        self.keys_for(Some(video_id), video_id)
    }
}

/// The queue's keys: one [`Keys`] per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    shards: Vec<Keys>,
}

impl Layout {
    /// The layout of a queue under `prefix` with `shards` shards (at least 1). Sharded keys
    /// (`{<prefix>:<k>}:...`) when `shards > 1` or `cluster`; otherwise the unsharded keys of
    /// [`Keys::new`], so a single-node queue keeps its keys.
    pub fn new(prefix: &str, shards: usize, cluster: bool) -> Self {
        let n = shards.max(1);
        let shards = if n == 1 && !cluster {
            vec![Keys::new(prefix)]
        } else {
            (0..n).map(|k| Keys::shard(prefix, k)).collect()
        };
        Layout { shards }
    }

    /// Every shard's keys, in shard order.
    pub fn shards(&self) -> &[Keys] {
        &self.shards
    }

    /// How many shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Never true: a layout has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The keys of shard `k` (modulo the number of shards).
    pub fn shard(&self, k: usize) -> &Keys {
        &self.shards[k % self.shards.len()]
    }

    /// The keys of the shard that a job with this `video_id` and `job_id` belongs to.
    pub fn keys_for(&self, video_id: Option<&str>, job_id: &str) -> &Keys {
        self.shard(shard_of(routing_key(video_id, job_id), self.len()))
    }

    /// The shard whose results stream `reply_to` names, if any.
    pub fn shard_of_reply_to(&self, reply_to: &str) -> Option<&Keys> {
        self.shards.iter().find(|k| k.accepts_reply_to(reply_to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_prefix() {
        let k = Keys::new("{hmr2}");
        assert_eq!(k.jobs, "{hmr2}:jobs");
        assert_eq!(k.results, "{hmr2}:results");
        assert_eq!(k.dead, "{hmr2}:dead");
        assert_eq!(k.group, "{hmr2}-workers");
    }

    #[test]
    fn results_never_go_to_the_job_or_dead_stream() {
        let k = Keys::new("p");
        assert_eq!(k.reply_stream(None), "p:results");
        assert_eq!(k.reply_stream(Some("p:results:v7")), "p:results:v7");
        assert_eq!(k.reply_stream(Some("mine")), "p:results");
        assert_eq!(k.reply_stream(Some("p:jobs")), "p:results");
        assert_eq!(k.reply_stream(Some("p:dead")), "p:results");
        assert_eq!(k.reply_stream(Some("other:results")), "p:results");
        assert!(!k.accepts_reply_to("q:results"));
        assert!(k.accepts_reply_to("p:results"));
    }

    #[test]
    fn a_stream_that_merely_starts_with_the_results_stream_is_not_a_reply_stream() {
        let k = Keys::new("hmr2");
        for other in [
            "hmr2:results-b:jobs",
            "hmr2:resultsX",
            "hmr2:results_",
            "hmr2:results{x}",
        ] {
            assert!(!k.accepts_reply_to(other), "{other}");
            assert_eq!(k.reply_stream(Some(other)), "hmr2:results");
        }
        for mine in ["hmr2:results", "hmr2:results:", "hmr2:results:video-7"] {
            assert!(k.accepts_reply_to(mine), "{mine}");
        }
        let l = Layout::new("hmr2", 4, false);
        let s2 = l.shard(2);
        assert!(s2.accepts_reply_to("{hmr2:2}:results:v"));
        assert!(!s2.accepts_reply_to("{hmr2:2}:results2:v"));
    }

    #[test]
    fn one_shard_without_a_cluster_keeps_the_unsharded_keys() {
        let l = Layout::new("hmr2", 1, false);
        assert_eq!(l.len(), 1);
        assert_eq!(l.shard(0), &Keys::new("hmr2"));
        assert_eq!(l.keys_for(Some("any video"), "j").jobs, "hmr2:jobs");
    }

    #[test]
    fn each_shard_has_its_own_hash_tag() {
        let l = Layout::new("hmr2", 4, true);
        let k = l.shard(2);
        assert_eq!(k.shard, 2);
        assert_eq!(k.jobs, "{hmr2:2}:jobs");
        assert_eq!(k.results, "{hmr2:2}:results");
        assert_eq!(k.dead, "{hmr2:2}:dead");
        assert_eq!(k.group, "{hmr2:2}-workers");
        assert_eq!(k.model, "hmr2:model");
        // A cluster with one shard still keeps its keys in one slot.
        assert_eq!(Layout::new("hmr2", 1, true).shard(0).jobs, "{hmr2:0}:jobs");
        // A reply stream belongs to exactly one shard.
        assert!(k.accepts_reply_to("{hmr2:2}:results:v"));
        assert!(!k.accepts_reply_to("{hmr2:1}:results:v"));
        assert!(!k.accepts_reply_to("hmr2:results"));
        assert_eq!(l.shard_of_reply_to("{hmr2:3}:results:x").unwrap().shard, 3);
        assert_eq!(l.shard_of_reply_to("{hmr2:12}:results"), None);
    }

    #[test]
    fn video_keys_live_under_the_shard_tag() {
        let k = Keys::new("hmr2");
        assert_eq!(k.tag, "hmr2");
        assert_eq!(k.videos, "hmr2:videos");
        assert_eq!(k.trackers, "hmr2-trackers");
        assert_eq!(k.videos_open, "hmr2:videos:open");
        assert_eq!(k.video_state("clip-7"), "hmr2:video:clip-7");
        assert_eq!(k.video_frames("clip-7"), "hmr2:video-frames:clip-7");
        assert_eq!(
            k.video_output("clip-7", None).as_deref(),
            Some("hmr2:results:video:clip-7")
        );
        let l = Layout::new("hmr2", 4, true);
        let s3 = l.shard(3);
        assert_eq!(s3.tag, "{hmr2:3}");
        assert_eq!(s3.videos, "{hmr2:3}:videos");
        assert_eq!(s3.trackers, "{hmr2:3}-trackers");
        assert_eq!(s3.videos_open, "{hmr2:3}:videos:open");
        assert_eq!(s3.video_state("clip-7"), "{hmr2:3}:video:clip-7");
        assert_eq!(s3.video_frames("clip-7"), "{hmr2:3}:video-frames:clip-7");
        assert_eq!(
            s3.video_output("clip-7", None).as_deref(),
            Some("{hmr2:3}:results:video:clip-7")
        );
        // Every key of a shard but `model` shares its tag (one cluster slot).
        for key in [
            &s3.jobs,
            &s3.results,
            &s3.dead,
            &s3.group,
            &s3.videos,
            &s3.trackers,
            &s3.videos_open,
        ] {
            assert!(key.starts_with(&s3.tag), "{key}");
        }
        // A whole layout picks the video's shard; one shard's keys are taken as they are.
        let shard = shard_of("clip-7", 4);
        assert_eq!(l.video_keys("clip-7").shard, shard);
        assert_eq!(
            l.video_keys("clip-7"),
            l.keys_for(Some("clip-7"), "clip-7:0")
        );
        assert_eq!(s3.video_keys("clip-7"), s3);
    }

    #[test]
    fn a_video_output_follows_the_reply_to_rule() {
        let k = Keys::new("hmr2");
        assert_eq!(
            k.video_output("v", Some("hmr2:results:mine")).as_deref(),
            Some("hmr2:results:mine")
        );
        assert_eq!(
            k.video_output("v", Some("hmr2:results")).as_deref(),
            Some("hmr2:results")
        );
        for refused in [
            "hmr2:jobs",
            "hmr2:videos",
            "hmr2:results-b",
            "other:results:v",
            "",
        ] {
            assert_eq!(k.video_output("v", Some(refused)), None, "{refused}");
        }
        let s1 = Layout::new("hmr2", 4, false).shard(1).clone();
        assert_eq!(s1.video_output("v", Some("{hmr2:2}:results:v")), None);
        assert_eq!(
            s1.video_output("v", Some("{hmr2:1}:results:v")).as_deref(),
            Some("{hmr2:1}:results:v")
        );
    }

    #[test]
    fn no_video_id_makes_one_video_key_equal_another() {
        // The state and frames of two videos never share a key, whatever their ids hold.
        let k = Keys::new("hmr2");
        let ids = [
            "a",
            "a:b",
            "frames:a",
            "-frames:a",
            "",
            ":",
            "video-frames:a",
            "s:a",
        ];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            assert!(seen.insert(k.video_state(id)), "{id}");
            assert!(seen.insert(k.video_frames(id)), "{id}");
        }
        assert!(!seen.contains(&k.videos) && !seen.contains(&k.videos_open));
    }

    #[test]
    fn the_shard_hash_is_crc32_of_the_routing_key() {
        // Fixed values: the same as Python's `zlib.crc32(key.encode()) % n`.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(shard_of("123456789", 7), (0xCBF4_3926u64 % 7) as usize);
        assert_eq!(shard_of("video-7", 1), 0);
        assert_eq!(routing_key(Some("v"), "j"), "v");
        assert_eq!(routing_key(None, "j"), "j");
        let l = Layout::new("p", 4, true);
        assert_eq!(
            l.keys_for(Some("video-7"), "a").shard,
            l.keys_for(Some("video-7"), "b").shard
        );
    }

    /// The same vectors are checked against Python's `zlib.crc32` by the deploy tests (the
    /// README's producer snippet).
    #[test]
    fn the_shard_hash_matches_the_shared_test_vectors() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../tests/shard_vectors.json")).unwrap();
        let vectors = vectors.as_array().unwrap();
        assert!(vectors.len() >= 5);
        for v in vectors {
            let key = v["key"].as_str().unwrap();
            assert_eq!(
                u64::from(crc32fast::hash(key.as_bytes())),
                v["crc32"].as_u64().unwrap()
            );
            for (n, shard) in v["shards"].as_object().unwrap() {
                let n: usize = n.parse().unwrap();
                assert_eq!(
                    shard_of(key, n) as u64,
                    shard.as_u64().unwrap(),
                    "{key} % {n}"
                );
            }
        }
    }

    #[test]
    fn videos_spread_evenly_over_shards() {
        for n in [3usize, 4, 6] {
            let mut count = vec![0usize; n];
            for v in 0..6000 {
                count[shard_of(&format!("video-{v}"), n)] += 1;
            }
            let even = 6000 / n;
            for c in count {
                assert!(c.abs_diff(even) < even / 10, "{n} shards: {c} vs {even}");
            }
        }
    }
}
