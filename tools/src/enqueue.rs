//! Enqueueing frames per the wire contract: what the upload pipeline does, as a library (for the
//! `enqueue`, `demo` and `bench` commands and for tests).

use std::path::{Path, PathBuf};

use base64::Engine;
use redis::aio::MultiplexedConnection;
use serde_json::json;

use crate::error::QueueError;
use crate::queue::Keys;

/// One frame to enqueue.
#[derive(Debug, Clone)]
pub struct Frame {
    pub job_id: String,
    pub video_id: Option<String>,
    pub frame_number: Option<u64>,
    /// JPEG or PNG bytes.
    pub image: Vec<u8>,
    pub boxes: Option<Vec<[f64; 4]>>,
    pub reply_to: Option<String>,
    pub include_vertices: bool,
}

/// The stream fields of one job: `job` JSON, and `image` when sent raw (a third smaller than
/// base64 and no base64 work on either side).
pub fn fields(f: &Frame, raw: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut job = json!({ "v": 1, "job_id": f.job_id });
    if let Some(v) = &f.video_id {
        job["video_id"] = json!(v);
    }
    if let Some(n) = f.frame_number {
        job["frame_number"] = json!(n);
    }
    if let Some(b) = &f.boxes {
        job["boxes"] = json!(b);
    }
    if let Some(r) = &f.reply_to {
        job["reply_to"] = json!(r);
    }
    if f.include_vertices {
        job["include"] = json!(["vertices"]);
    }
    if raw {
        vec![
            ("job", job.to_string().into_bytes()),
            ("image", f.image.clone()),
        ]
    } else {
        job["image_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&f.image));
        vec![("job", job.to_string().into_bytes())]
    }
}

/// Adds `frames` to `{prefix}:jobs` in pipelined chunks; returns the stream entry ids.
/// `progress` is called after every chunk with the number done so far.
pub async fn enqueue(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    frames: &[Frame],
    raw: bool,
    mut progress: impl FnMut(usize),
) -> Result<Vec<String>, QueueError> {
    let mut ids = Vec::with_capacity(frames.len());
    for chunk in frames.chunks(64) {
        let mut pipe = redis::pipe();
        for f in chunk {
            let fields = fields(f, raw);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&keys.jobs).arg("*");
            for (k, v) in &fields {
                cmd.arg(*k).arg(v.as_slice());
            }
            pipe.add_command(cmd);
        }
        let chunk_ids: Vec<String> = pipe.query_async(conn).await?;
        ids.extend(chunk_ids);
        progress(ids.len());
    }
    Ok(ids)
}

/// The image files named by `paths` (files, or folders scanned for .jpg/.jpeg/.png), sorted.
pub fn image_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", p.display()),
            ));
        }
    }
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_the_contract() {
        let f = Frame {
            job_id: "v:1".into(),
            video_id: Some("v".into()),
            frame_number: Some(1),
            image: vec![1, 2, 3],
            boxes: Some(vec![[0.0, 0.0, 10.0, 20.0]]),
            reply_to: None,
            include_vertices: true,
        };
        let raw = fields(&f, true);
        assert_eq!(raw[1], ("image", vec![1, 2, 3]));
        let job: serde_json::Value = serde_json::from_slice(&raw[0].1).unwrap();
        assert_eq!(job["job_id"], "v:1");
        assert_eq!(job["include"][0], "vertices");
        assert!(job.get("image_base64").is_none());
        let b64 = fields(&f, false);
        assert_eq!(b64.len(), 1);
        let job: serde_json::Value = serde_json::from_slice(&b64[0].1).unwrap();
        assert_eq!(job["image_base64"], "AQID");
    }
}
