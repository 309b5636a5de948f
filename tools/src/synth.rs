//! `hmr2 synth`: random synthetic frames ([`render_random`]: 0–3 walking figures of any size,
//! anywhere, on varied backgrounds) written as JPEGs with their boxes, to train and test the
//! person detector (`models/train_detector.py`).
//!
//! Writes `DIR/00000.jpg`, `DIR/00001.jpg`, … and `DIR/boxes.json`:
//! `{"00000.jpg": [[x1, y1, x2, y2], ...], ...}` in pixels of that frame, one frame a line.
//! Frame `i` depends only on the seed, `i` and its size, so a set can be written again
//! exactly, and sets of different seeds share no frame.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;

use crate::demo::frames::{encode_jpeg, render_random, SplitMix64, JPEG_QUALITY};

/// Options of `hmr2 synth`.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Frames to write.
    pub count: usize,
    pub seed: u64,
    /// Frame sizes, taken in turn: frame `i` is `sizes[i % sizes.len()]`.
    pub sizes: Vec<(u32, u32)>,
    pub out: PathBuf,
}

/// The [`render_random`] seed of frame `index` of the set of `seed`.
pub fn frame_seed(seed: u64, index: u64) -> u64 {
    let key = SplitMix64(seed).next_u64();
    SplitMix64(key ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// Renders and writes the frames on every core, then `boxes.json`.
pub fn run(o: &SynthOptions) -> anyhow::Result<()> {
    anyhow::ensure!(!o.sizes.is_empty(), "no frame size");
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut boxes: Vec<(usize, Vec<[f64; 4]>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<_>> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= o.count {
                            return Ok(done);
                        }
                        let (w, h) = o.sizes[i % o.sizes.len()];
                        let (img, b) = render_random(w, h, frame_seed(o.seed, i as u64));
                        let path = o.out.join(format!("{i:05}.jpg"));
                        std::fs::write(&path, encode_jpeg(&img, JPEG_QUALITY))
                            .with_context(|| format!("writing {}", path.display()))?;
                        done.push((i, b));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|t| t.join().expect("a render thread panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect())
    })?;
    boxes.sort_by_key(|(i, _)| *i);
    let lines: Vec<String> = boxes
        .iter()
        .map(|(i, b)| format!("\"{i:05}.jpg\": {}", serde_json::json!(b)))
        .collect();
    let path = o.out.join("boxes.json");
    std::fs::write(&path, format!("{{\n{}\n}}\n", lines.join(",\n")))
        .with_context(|| format!("writing {}", path.display()))?;
    let figures: usize = boxes.iter().map(|(_, b)| b.len()).sum();
    println!(
        "{} frames, {figures} figures in {}",
        o.count,
        o.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_frames_and_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let o = SynthOptions {
            count: 5,
            seed: 3,
            sizes: vec![(96, 64), (64, 96)],
            out: dir.path().to_path_buf(),
        };
        run(&o).unwrap();
        let text = std::fs::read_to_string(dir.path().join("boxes.json")).unwrap();
        let boxes: std::collections::BTreeMap<String, Vec<[f64; 4]>> =
            serde_json::from_str(&text).unwrap();
        assert_eq!(boxes.len(), 5);
        for i in 0..5u64 {
            let name = format!("{i:05}.jpg");
            let img = ::image::open(dir.path().join(&name)).unwrap();
            let (w, h) = o.sizes[i as usize % 2];
            assert_eq!((img.width(), img.height()), (w, h));
            let expected = render_random(w, h, frame_seed(3, i)).1;
            assert_eq!(boxes[&name].len(), expected.len());
            for (got, want) in boxes[&name].iter().zip(&expected) {
                assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9));
            }
        }
    }

    #[test]
    fn seeds_give_different_sets() {
        let a: Vec<_> = (0..50).map(|i| frame_seed(1, i)).collect();
        let b: Vec<_> = (0..50).map(|i| frame_seed(2, i)).collect();
        assert!(a.iter().all(|s| !b.contains(s)));
        assert_eq!(a[7], frame_seed(1, 7));
    }
}
