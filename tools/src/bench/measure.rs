//! The measurements beside the end-to-end run: raw decode rate of the same frames on the same
//! cores, model-only forward rate, peak RSS, percentiles, and reading the worker's `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use hmr2_worker::error::InputError;
use hmr2_worker::image::{self, Limits, CROP_BYTES};
use hmr2_worker::model::{Model, TorchModel};
use hmr2_worker::worker::prepare::{self, Plan};

/// A rate measured over `frames` in `seconds`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rate {
    pub frames: usize,
    pub seconds: f64,
    pub frames_per_s: f64,
}

impl Rate {
    pub fn new(frames: usize, seconds: f64) -> Self {
        Rate {
            frames,
            seconds,
            frames_per_s: frames as f64 / seconds.max(1e-9),
        }
    }
}

/// The model alone at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardRate {
    pub batch: usize,
    pub batches: usize,
    pub ms_per_batch: f64,
    pub frames_per_s: f64,
    /// Allocator peak during one batch (GPU only).
    pub peak_allocated_bytes: Option<i64>,
    /// CPU seconds of this process per second of the measurement (how many cores it kept busy).
    pub cpu_cores: f64,
}

/// An encoded frame and its boxes, as the bench sends it.
pub struct Encoded<'a> {
    pub bytes: &'a [u8],
    pub boxes: &'a [[f64; 4]],
}

/// What the worker decides for a frame before decoding it (the worker's own crop plan: size,
/// boxes checked against the image, crop geometries, DCT scale).
fn plan(e: &Encoded<'_>, limits: &Limits) -> Result<Plan, InputError> {
    prepare::plan(e.bytes, e.boxes, limits).map_err(|(error, _)| error)
}

/// The DCT scale the worker decodes `e` at.
pub fn worker_scale(e: &Encoded<'_>, limits: &Limits) -> u32 {
    plan(e, limits).map_or(1, |p| p.scale)
}

/// Decodes `count` frames (cycling through `frames`) on `threads` threads, each one `probe` +
/// `decode` at the scale the worker would use, and with `crop` also every crop, as the worker's
/// decode stage does (minus parsing the job).
pub fn decode_rate(
    frames: &[Encoded<'_>],
    threads: usize,
    count: usize,
    crop: bool,
    limits: &Limits,
) -> anyhow::Result<Rate> {
    let plans = frames
        .iter()
        .map(|e| plan(e, limits))
        .collect::<Result<Vec<_>, _>>()?;
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut out = vec![0u8; CROP_BYTES];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let k = i % frames.len();
                    let p = &plans[k];
                    let info = image::probe(frames[k].bytes, limits).unwrap_or(p.info);
                    let Ok(frame) = image::decode(frames[k].bytes, &info, p.scale) else {
                        continue;
                    };
                    if crop {
                        for person in &p.people {
                            image::crop_into(&frame, &person.crop, &mut out);
                        }
                    }
                    std::hint::black_box(&out);
                }
            });
        }
    });
    Ok(Rate::new(count, t.elapsed().as_secs_f64()))
}

/// Times the model alone: `batch` crops per forward (the crops are cycled from `crops`),
/// three warm-up passes (TorchScript optimises on the first calls), then at least
/// `min_batches` passes and `min_seconds`. Runs on the calling thread.
pub fn forward_rate(
    model: &mut TorchModel,
    crops: &[u8],
    batch: usize,
    min_batches: usize,
    min_seconds: f64,
) -> anyhow::Result<ForwardRate> {
    let _no_grad = tch::no_grad_guard();
    let have = (crops.len() / CROP_BYTES).max(1);
    let input: Vec<u8> = (0..batch)
        .flat_map(|i| {
            let k = i % have;
            crops[k * CROP_BYTES..(k + 1) * CROP_BYTES].iter().copied()
        })
        .collect();
    for _ in 0..3 {
        model.forward(&input, batch, false)?;
    }
    let cuda = model.cuda_index();
    if let Some(d) = cuda {
        let _ = hmr2_worker::gpu::reset_peak(d);
    }
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut batches = 0;
    while batches < min_batches || t.elapsed().as_secs_f64() < min_seconds {
        model.forward(&input, batch, false)?;
        batches += 1;
    }
    let seconds = t.elapsed().as_secs_f64();
    let peak = cuda.and_then(|d| hmr2_worker::gpu::stats(d).ok().map(|s| s.peak_allocated));
    Ok(ForwardRate {
        batch,
        batches,
        ms_per_batch: seconds * 1e3 / batches as f64,
        frames_per_s: (batches * batch) as f64 / seconds,
        peak_allocated_bytes: peak,
        cpu_cores: (cpu_seconds() - cpu) / seconds,
    })
}

/// The crops the worker would make of `frames` (one per box, or one of the whole frame).
pub fn crops_of(frames: &[Encoded<'_>], limits: &Limits) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in frames {
        let p = plan(e, limits)?;
        let frame = image::decode(e.bytes, &p.info, p.scale)?;
        for person in &p.people {
            let start = out.len();
            out.resize(start + CROP_BYTES, 0);
            image::crop_into(&frame, &person.crop, &mut out[start..]);
        }
    }
    Ok(out)
}

/// Loads a model for [`forward_rate`].
pub fn load_model(path: &Path, device: tch::Device) -> anyhow::Result<TorchModel> {
    Ok(TorchModel::load(path, device)?)
}

/// Peak resident set size of this process (`VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// Resident set size of this process now (`VmRSS`), bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` 5); false when not permitted.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time (user + system) this process has used, all threads, seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time (user + system) of this process's live child processes (the throwaway
/// redis-server), seconds, from `/proc/<pid>/stat`.
pub fn children_cpu_seconds() -> f64 {
    let me = std::process::id().to_string();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid ... utime(14) stime(15).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) == Some(&me.as_str()) {
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            total += (t(11) + t(12)) / ticks;
        }
    }
    total
}

/// Nearest-rank percentile `p` (0–100) of `sorted` (ascending); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50/p95/p99/max/mean of a sample, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Percentiles {
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or(0.0),
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        }
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Parses the Prometheus text exposition format (comments skipped).
    pub fn parse(text: &str) -> Self {
        Scrape(text.lines().filter_map(parse_sample).collect())
    }

    /// The value of `name` with every label in `labels` (the first match).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

    /// Values of `name` keyed by the value of label `by`, summed over other labels.
    pub fn by_label(&self, name: &str, by: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.0.iter().filter(|s| s.name == name) {
            if let Some((_, v)) = s.labels.iter().find(|(k, _)| k == by) {
                *out.entry(v.clone()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The cumulative buckets of histogram `name` as (upper bound, count), ascending; `+Inf` last.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| {
                let le = s.labels.iter().find(|(k, _)| k == "le")?;
                let bound = if le.1 == "+Inf" {
                    f64::INFINITY
                } else {
                    le.1.parse().ok()?
                };
                Some((bound, s.value))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close]),
                &line[close + 1..],
            )
        }
        None => {
            let (n, r) = line.split_once(char::is_whitespace)?;
            (n, Vec::new(), r)
        }
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP hmr2_batch_size Frames per forward pass.
# TYPE hmr2_batch_size histogram
hmr2_batch_size_bucket{le="1"} 2
hmr2_batch_size_bucket{le="+Inf"} 7
hmr2_batch_size_bucket{le="16"} 7
hmr2_batch_size_sum 90
hmr2_stage_duration_seconds_sum{stage="decode"} 1.5
hmr2_stage_duration_seconds_sum{stage="inference"} 2.5e0
hmr2_build_info{version="0.1.0",model="hmr2 \"tiny\", fp32"} 1
hmr2_worker_ready 1
"#;

    #[test]
    fn prometheus_text_parses() {
        let s = Scrape::parse(PAGE);
        assert_eq!(s.get("hmr2_worker_ready", &[]), Some(1.0));
        assert_eq!(s.get("hmr2_batch_size_sum", &[]), Some(90.0));
        assert_eq!(
            s.buckets("hmr2_batch_size"),
            vec![(1.0, 2.0), (16.0, 7.0), (f64::INFINITY, 7.0)]
        );
        let stages = s.by_label("hmr2_stage_duration_seconds_sum", "stage");
        assert_eq!(stages["decode"], 1.5);
        assert_eq!(stages["inference"], 2.5);
        assert_eq!(
            s.get("hmr2_build_info", &[("model", "hmr2 \"tiny\", fp32")]),
            Some(1.0)
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(v);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn cpu_time_is_counted() {
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() > before);
        assert!(children_cpu_seconds() >= 0.0);
    }

    #[test]
    fn peak_rss_is_readable() {
        let peak = peak_rss_bytes().expect("Linux /proc");
        assert!(peak >= rss_bytes().unwrap() / 2);
    }
}
