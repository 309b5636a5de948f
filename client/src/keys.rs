//! Every Redis key and name of the contract, built in one place from the prefix (DESIGN §3).

/// Every key and name the worker and its producers use, built from the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
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
    /// (JSON strings), and `detector` when one is configured.
    pub model: String,
}

impl Keys {
    /// Keys for `prefix`. With a prefix in braces (`{hmr2}`) the three streams share a Redis
    /// Cluster hash slot.
    pub fn new(prefix: &str) -> Self {
        Keys {
            jobs: format!("{prefix}:jobs"),
            results: format!("{prefix}:results"),
            dead: format!("{prefix}:dead"),
            group: format!("{prefix}-workers"),
            model: format!("{prefix}:model"),
        }
    }

    /// Whether a job may name `reply_to`: it must start with `{prefix}:results` (DESIGN §3), so
    /// an ACL on the prefix covers it and no other stream (another tenant's job stream, say) can
    /// be written or trimmed. Anything else is `invalid_job`.
    pub fn accepts_reply_to(&self, reply_to: &str) -> bool {
        reply_to.starts_with(&self.results)
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
}
