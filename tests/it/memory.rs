//! Host memory under a flood of maximum-size jobs (docs/memory.md): the worker process's RSS
//! stays under a bound computed from its settings, because it holds at most
//! `max_batch × (queue_depth + 2)` entries and drops an entry's frame once it is decoded.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmr2_client::{Keys, Limits};
use hmr2_worker::config::{Config, Overrides};
use redis::AsyncCommands;

use crate::support::*;

const KIB: u64 = 1 << 10;
const MIB: usize = 1 << 20;

/// The flood's settings: small enough to run in seconds, shaped like production (the bound is
/// a formula of them).
const MAX_IMAGE_BYTES: usize = 2 * MIB;
const MAX_PIXELS: u64 = 1024 * 1024;
const MAX_BATCH: usize = 16;
const QUEUE_DEPTH: usize = 2;
const DECODE_THREADS: usize = 2;
/// Boxes per valid job (each is a 256 × 256 crop held until its result is published).
const BOXES: usize = 4;
/// How many times over the flood fills every in-flight slot.
const ROUNDS: usize = 4;
/// Allowance for allocator slack (arenas, fragmentation) and thread stacks.
const SLACK: u64 = 64 << 20;

/// `max_job_bytes` by the rule of `config/default.toml`: the largest image in base64, plus 1 MiB.
fn max_job_bytes(max_image_bytes: usize) -> usize {
    4 * max_image_bytes.div_ceil(3) + MIB
}

fn in_flight() -> usize {
    MAX_BATCH * (QUEUE_DEPTH + 2)
}

/// The documented bound over the post-warm-up baseline (docs/memory.md), bytes: two fetches'
/// worth of whole entries (the read's reply and the entries cut from it, or the entries in the
/// decode queue), what each decoder holds at once (the base64-decoded image and the decoded
/// frame), every in-flight job's crops, and allocator slack. Frames of decoded entries are not
/// in it: they are dropped.
fn growth_bound() -> u64 {
    let job = max_job_bytes(MAX_IMAGE_BYTES) as u64;
    let crop = hmr2_worker::image::CROP_BYTES as u64;
    2 * MAX_BATCH as u64 * job
        + DECODE_THREADS as u64 * (MAX_IMAGE_BYTES as u64 + 3 * MAX_PIXELS)
        + (in_flight() * BOXES) as u64 * crop
        + SLACK
}

#[test]
fn max_job_bytes_holds_the_largest_image_in_base64() {
    let c = Config::defaults();
    assert_eq!(c.limits.max_image_bytes, 20_971_520);
    assert_eq!(c.limits.base64_image_bytes(), 27_962_028);
    assert_eq!(
        c.limits.max_job_bytes,
        max_job_bytes(c.limits.max_image_bytes)
    );
    assert_eq!(c.limits.max_job_bytes, 29_010_604);
    assert_eq!(
        Limits::default(),
        c.limits.job(),
        "the client's defaults are the worker's"
    );

    let load = |image: usize, job: usize| {
        let mut o = Overrides::default();
        o.set("limits.max_image_bytes", Some(image))
            .set("limits.max_job_bytes", Some(job));
        Config::load(None, &o, false)
    };
    let b64 = 4 * MAX_IMAGE_BYTES.div_ceil(3);
    assert!(
        load(MAX_IMAGE_BYTES, b64).is_ok(),
        "the base64 size itself is enough"
    );
    let err = load(MAX_IMAGE_BYTES, b64 - 1).unwrap_err().to_string();
    assert!(err.contains("limits.max_job_bytes"), "{err}");
    let err = load(30 << 20, Config::defaults().limits.max_job_bytes)
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.max_job_bytes"), "{err}");
}

/// `VmRSS` and `VmHWM` of process `pid`, bytes.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|kb| kb * KIB)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples `VmRSS` of `pid` every 5 ms until stopped; keeps the highest.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((now, _)) = rss(pid) {
                    p.fetch_max(now, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A PNG of `width × height` pixels whose top rows are noise (incompressible) and the rest
/// flat, with as many noise rows as fit in `max_bytes`: an image as large as the limits allow
/// both encoded and decoded.
fn largest_png(width: u32, height: u32, max_bytes: usize) -> Vec<u8> {
    let encode = |noise_rows: u32| {
        let mut state = 0x2545_f491u32;
        let img = image::RgbImage::from_fn(width, height, |_, y| {
            if y >= noise_rows {
                return image::Rgb([90, 120, 150]);
            }
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            };
            image::Rgb([next(), next(), next()])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encode");
        out.into_inner()
    };
    // Each noise row costs about its raw size (1 filter byte + 3 per pixel).
    let mut rows = (max_bytes / (1 + 3 * width as usize)) as u32;
    loop {
        let png = encode(rows.min(height));
        if png.len() <= max_bytes {
            return png;
        }
        rows -= 4;
    }
}

/// A `job` field of exactly `size` bytes: `head` and a string of `fill` under `key`.
fn padded(head: &str, key: &str, fill: u8, size: usize) -> Vec<u8> {
    let mut job = format!("{{{head},\"{key}\":\"").into_bytes();
    let room = size - job.len() - 2;
    job.resize(job.len() + room, fill);
    job.extend_from_slice(b"\"}");
    job
}

/// Floods a worker with maximum-size jobs (rounds × in-flight of them: decodable frames as
/// large as `max_image_bytes` allows, and `job` fields of exactly `max_job_bytes` that are
/// rejected) and checks the peak RSS against [`growth_bound`] over the post-warm-up baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_maximum_size_jobs_keeps_host_memory_bounded() {
    let redis = shared_redis();
    let url = redis.url();
    let p = prefix("memory");
    let keys = Keys::new(&p);
    let job_bytes = max_job_bytes(MAX_IMAGE_BYTES);
    let mut cfg = config(&url, &p);
    cfg.queue.max_batch = MAX_BATCH;
    let env = [
        ("HMR2_LIMITS__MAX_IMAGE_BYTES", MAX_IMAGE_BYTES.to_string()),
        ("HMR2_LIMITS__MAX_JOB_BYTES", job_bytes.to_string()),
        ("HMR2_LIMITS__MAX_PIXELS", MAX_PIXELS.to_string()),
        ("HMR2_LIMITS__MAX_BOXES", BOXES.to_string()),
        ("HMR2_PIPELINE__QUEUE_DEPTH", QUEUE_DEPTH.to_string()),
        ("HMR2_PIPELINE__DECODE_THREADS", DECODE_THREADS.to_string()),
        ("HMR2_QUEUE__GAUGE_INTERVAL_MS", "1000".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    let extra = std::env::var("MEM_EXTRA_ENV").unwrap_or_default();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for kv in extra.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        env.push((k, v));
    }
    let worker = spawn_worker_process_with(&cfg, &env);
    let pid = worker.id();
    wait_status(
        &format!("http://{}/readyz", cfg.http.listen),
        200,
        Duration::from_secs(90),
    )
    .await;

    // Warm-up: a few small frames through every stage, then the baseline.
    let warm: Vec<_> = (0..4)
        .map(|i| frame(&format!("warm-{i}"), image(320, 240, i, false)))
        .collect();
    enqueue_frames(&url, &p, &warm, true).await;
    wait_results(&url, &keys.results, warm.len(), Duration::from_secs(60)).await;
    let (baseline, _) = rss(pid).expect("the worker's /proc status");

    // The flood's jobs.
    let png = largest_png(1024, 1024, MAX_IMAGE_BYTES);
    assert!(png.len() > MAX_IMAGE_BYTES * 9 / 10, "{} bytes", png.len());
    let b64 = base64::engine::general_purpose::STANDARD;
    let png64 = b64.encode(&png);
    let boxes: Vec<String> = (0..BOXES)
        .map(|i| {
            let x = 40.0 + 200.0 * i as f64;
            format!("[{x},100,{},900]", x + 180.0)
        })
        .collect();
    let boxes = boxes.join(",");
    let mut noise = vec![0u8; MAX_IMAGE_BYTES];
    let mut state = 7u32;
    for b in &mut noise {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *b = state as u8;
    }
    let noise64 = b64.encode(&noise);
    drop(noise);
    let job = |i: usize| -> (Vec<u8>, bool) {
        let head = format!("\"job_id\":\"flood-{i}\",\"video_id\":\"flood\",\"frame_number\":{i}");
        match i % 4 {
            // The largest frame, decoded and run.
            0 | 1 => (
                format!("{{{head},\"boxes\":[{boxes}],\"image_base64\":\"{png64}\"}}").into_bytes(),
                true,
            ),
            // As large as allowed, with no image: rejected after parsing.
            2 => (padded(&head, "filler", b'x', job_bytes), false),
            // As large as allowed, an image's worth of base64 that is no image: rejected after
            // base64 decoding.
            _ => {
                let mut j =
                    format!("{{{head},\"image_base64\":\"{noise64}\",\"filler\":\"").into_bytes();
                j.resize(job_bytes - 2, b'y');
                j.extend_from_slice(b"\"}");
                (j, false)
            }
        }
    };
    assert!(job(0).0.len() <= job_bytes && job(3).0.len() == job_bytes);

    // Producer: keeps the stream a fetch ahead of the in-flight slots (Redis holds at most that
    // many entries), trims the dead letters of the rejected jobs as it goes.
    let total = ROUNDS * in_flight();
    let backlog = in_flight() + MAX_BATCH;
    let sampler = Sampler::start(pid);
    let mut conn = connect(&url).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let mut sent = 0;
    let mut valid = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "only {sent} of {total} jobs sent, {} queued or pending, after {:?}",
            xlen(&url, &keys.jobs).await,
            started.elapsed()
        );
        let _: () = redis::cmd("XTRIM")
            .arg(&keys.dead)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("xtrim");
        let queued: usize = conn.xlen(&keys.jobs).await.expect("xlen");
        if sent == total {
            if queued == 0 {
                break;
            }
        } else if queued < backlog {
            let (raw, ok) = job(sent);
            let _: String = redis::cmd("XADD")
                .arg(&keys.jobs)
                .arg("*")
                .arg("job")
                .arg(raw)
                .query_async(&mut conn)
                .await
                .expect("xadd");
            sent += 1;
            valid += ok as usize;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = started.elapsed();
    let peak_sampled = sampler.finish();
    let (rss_end, hwm) = rss(pid).expect("the worker's /proc status");
    let redis_peak: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("info");
    let redis_peak = redis_peak
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_peak_human:"))
        .unwrap_or("?")
        .trim()
        .to_string();

    // Every job was answered: the frames with poses, the rest with an error.
    let all = wait_results(
        &url,
        &keys.results,
        warm.len() + total,
        Duration::from_secs(30),
    )
    .await;
    let ok = all
        .iter()
        .filter(|(id, r)| id.starts_with("flood-") && r["status"] == "ok")
        .count();
    assert_eq!(ok, valid, "every decodable frame has its poses");

    let mb = |b: u64| b as f64 / MIB as f64;
    let bound = baseline + growth_bound();
    let frames_kept = (in_flight() * png64.len()) as u64;
    eprintln!(
        "memory flood: {total} jobs ({valid} decodable frames of {} B, base64 {} B; max_job_bytes \
         {job_bytes}) in {drained:.1?}; in flight {}; worker RSS: baseline {:.1} MiB, peak \
         sampled {:.1} MiB, VmHWM {:.1} MiB (growth {:.1} MiB), at the end {:.1} MiB; bound \
         {:.1} MiB (baseline + {:.1} MiB); every in-flight entry keeping its frame would add up \
         to {:.1} MiB; redis used_memory_peak {redis_peak}",
        png.len(),
        png64.len(),
        in_flight(),
        mb(baseline),
        mb(peak_sampled),
        mb(hwm),
        mb(hwm.saturating_sub(baseline)),
        mb(rss_end),
        mb(bound),
        mb(growth_bound()),
        mb(frames_kept),
    );
    assert!(
        hwm.max(peak_sampled) <= bound,
        "peak RSS {:.1} MiB is over the bound {:.1} MiB (baseline {:.1} MiB)",
        mb(hwm.max(peak_sampled)),
        mb(bound),
        mb(baseline)
    );
    drop(worker);
}
