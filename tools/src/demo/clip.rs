//! The demo as a video: the synthetic clip of [`render_clip`] goes in as ONE tracked video
//! (DESIGN §13) without boxes (the small detector finds the figures); a progress bar runs over
//! the frames answered, then the demo waits for the video's tracked output ("tracking"),
//! prints the summary and the tracks, draws overlays coloured by track on frames spread over
//! the clip (always one where a hidden figure was interpolated), and plots one joint's raw and
//! smoothed trajectory (`trajectory.png`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::ProgressBar;

use hmr2_client::producer::{self, VideoOutput};
use hmr2_client::{JobResult, Keys, Person, TrackInfo, TrackedPerson, VideoFrame, VideoStatus};
use hmr2_worker::config::Config;

use super::frames::{encode_jpeg, render_clip, CLIP_FPS, CLIP_FRAMES, JPEG_QUALITY};
use super::overlay::{self, LegendRow};
use super::plot::{self, Labels, Mark, Series};
use super::{collect, device_label, prepare, row, start, summary, DemoOptions, Input, Report};
use crate::bench::measure::Scrape;
use crate::bench::session::Session;

/// The video id the clip is submitted under.
pub const VIDEO_ID: &str = "demo";
/// Overlays drawn when `--overlays` is not given.
pub const DEFAULT_OVERLAYS: usize = 6;
/// How long the demo waits for the tracked output once the last frame is answered.
const TRACKING_TIMEOUT: Duration = Duration::from_secs(120);
/// The joint whose trajectory is plotted: the right wrist (OpenPose BODY_25 index 4).
pub const PLOT_JOINT: usize = 4;
/// The joint's name, as the plot and the summary write it.
pub const PLOT_JOINT_NAME: &str = "right wrist";
/// The smallest box overlap (IoU) for a per-frame result's person to count as a tracked one.
const MATCH_IOU: f32 = 0.3;

/// Renders the first `n` frames of the clip at `width`×`height`, as JPEG, with the boxes of
/// the figures that can be seen (sent only when no detector runs).
fn clip_inputs(n: usize, width: u32, height: u32) -> Vec<Input> {
    let one = |i: usize| {
        let (img, people) = render_clip(width, height, i);
        Input {
            name: format!("frame-{i:03}"),
            bytes: Arc::new(encode_jpeg(&img, JPEG_QUALITY)),
            boxes: Some(
                people
                    .iter()
                    .filter(|p| p.visible)
                    .map(|p| p.bbox)
                    .collect(),
            ),
        }
    };
    // Frame k on thread k % threads, put back in order.
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get().min(8));
    let mut parts: Vec<Vec<(usize, Input)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, one(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rendering does not panic"))
            .collect()
    });
    let mut all: Vec<(usize, Input)> = parts.drain(..).flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, input)| input).collect()
}

/// `hmr2 demo` without images.
pub(super) async fn run(mut config: Config, o: DemoOptions) -> anyhow::Result<Report> {
    let n = o.frames.unwrap_or(CLIP_FRAMES);
    anyhow::ensure!(
        (1..=CLIP_FRAMES).contains(&n),
        "--frames: the clip has {CLIP_FRAMES} frames; give 1 to {CLIP_FRAMES} (got {n})"
    );
    let (w, h) = o.size;
    anyhow::ensure!(
        (64..=4096).contains(&w) && (64..=4096).contains(&h),
        "--size: {w}x{h} is not between 64x64 and 4096x4096"
    );
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!(
        "drawing {n} frames of the synthetic clip at {w}x{h}"
    ));
    let mut inputs = tokio::task::spawn_blocking(move || clip_inputs(n, w, h)).await?;
    let detecting = prepare(&mut config);
    if detecting {
        for i in inputs.iter_mut() {
            i.boxes = None;
        }
    }
    // The video is tracked by this worker: whatever the configuration says.
    config.track.in_worker = true;
    let (mut session, stop) = start(config, o.redis_url.as_deref(), &spinner).await?;
    spinner.finish_and_clear();

    let inputs = Arc::new(inputs);
    let a = collect(
        &mut session,
        &stop,
        inputs.clone(),
        Some((n as u64, CLIP_FPS)),
        |_| true,
    )
    .await?;

    let tracking = ProgressBar::new_spinner();
    tracking.enable_steady_tick(Duration::from_millis(100));
    tracking.set_message(format!(
        "tracking: {n} frames answered, waiting for the video's tracked output"
    ));
    let output = tokio::select! {
        r = wait_output(&session) => r,
        _ = stop.cancelled() => {
            tracking.abandon_with_message("interrupted");
            session.stop().await?;
            anyhow::bail!("interrupted while the video was being tracked");
        }
    };
    tracking.finish_and_clear();
    let scrape = Scrape::parse(&session.scrape().await.unwrap_or_default());
    let label = session.config().model.path.display().to_string();
    let redis = session.redis_label().to_string();
    let stopped = session.stop().await;
    let output = output?;
    stopped?;

    let device = device_label(&scrape, label);
    let title = format!("hmr2 demo: {device}, {redis}");
    let mut t = summary(&title, n, &a, &scrape);
    let detection = if detecting {
        "boxes found by the detector"
    } else {
        "no detector configured: the figures' boxes sent with the frames"
    };
    let done = &output.done;
    row(
        &mut t,
        "video",
        format!(
            "{VIDEO_ID}: {n} frames at {CLIP_FPS} fps, {w}x{h}, one tracked video ({detection})"
        ),
    );
    row(
        &mut t,
        "  tracking",
        format!(
            "{} ms; output {:.2} s after the first frame was recorded",
            done.timings_ms.tracking.round(),
            done.timings_ms.total / 1000.0
        ),
    );
    if done.status != VideoStatus::Ok {
        row(
            &mut t,
            "  status",
            format!("{:?}: {} frames missing", done.status, done.missing_frames),
        );
    }
    let interpolated = interpolated_frames(&output.frames);
    let filled: usize = output
        .frames
        .iter()
        .map(|f| f.people.iter().filter(|p| p.interpolated).count())
        .sum();
    row(
        &mut t,
        "  interpolated",
        if filled == 0 {
            "none".to_string()
        } else {
            format!(
                "{filled} people in {} frames ({}): drawn faded, box dashed",
                interpolated.len(),
                frame_ranges(&interpolated)
            )
        },
    );

    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let picks = pick_frames(n, o.overlays.unwrap_or(DEFAULT_OVERLAYS), &interpolated);
    let written = write_overlays(&o.out, &inputs, &output.frames, &picks, n)?;
    if !written.is_empty() {
        row(
            &mut t,
            "overlays",
            format!(
                "{} PNG in {}/, coloured by track",
                written.len(),
                o.out.display()
            ),
        );
        for (p, note) in &written {
            row(&mut t, "", format!("{}{note}", p.display()));
        }
    }
    let trajectory = match plot_track(&done.tracks) {
        Some(id) => {
            let path = o.out.join("trajectory.png");
            let raw_frames = write_trajectory(&path, &output.frames, &a.kept, id)?;
            let why = if done
                .tracks
                .iter()
                .any(|k| k.track_id == id && k.interpolated_frames > 0)
            {
                ", the track with the most interpolated frames"
            } else {
                ""
            };
            row(
                &mut t,
                "trajectory",
                format!(
                    "{} (track {id}{why}: {PLOT_JOINT_NAME} x and y, raw per-frame results \
                     ({raw_frames} frames matched by box) vs the smoothed video output)",
                    path.display(),
                ),
            );
            Some(path)
        }
        None => None,
    };
    let _ = writeln!(
        t,
        "\ntracks of video {VIDEO_ID} ({} tracks)",
        done.tracks.len()
    );
    t.push_str(&format_tracks(&done.tracks));
    Ok(Report {
        text: t,
        failed: a.errors.values().sum(),
        overlays: written.into_iter().map(|(p, _)| p).collect(),
        trajectory,
        tracks: done.tracks.clone(),
    })
}

/// Waits on a connection of its own for the video's `done` entry.
async fn wait_output(session: &Session) -> anyhow::Result<VideoOutput> {
    let keys = Keys::new(&session.config().queue.prefix);
    let stream = keys
        .video_output(VIDEO_ID, None)
        .expect("the default output stream is always accepted");
    let client = redis::Client::open(session.config().redis.url.as_str())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {}", session.redis_label()))?;
    producer::wait_video(&mut conn, &stream, VIDEO_ID, TRACKING_TIMEOUT)
        .await
        .with_context(|| format!("reading {stream}"))?
        .with_context(|| {
            format!(
                "no tracked output on {stream} within {} s of the last frame's result",
                TRACKING_TIMEOUT.as_secs()
            )
        })
}

/// The frames (numbers) with at least one interpolated person, in order.
pub fn interpolated_frames(frames: &[VideoFrame]) -> Vec<usize> {
    frames
        .iter()
        .filter(|f| f.people.iter().any(|p| p.interpolated))
        .map(|f| f.frame_number as usize)
        .collect()
}

/// `3-7, 12` for frames 3, 4, 5, 6, 7 and 12.
pub fn frame_ranges(frames: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let mut j = i;
        while j + 1 < frames.len() && frames[j + 1] == frames[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            frames[i].to_string()
        } else {
            format!("{}-{}", frames[i], frames[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// `count` frames of `0..n` spread evenly from the first to the last, one of them (in place of
/// the nearest even pick) the middle of the longest run of `interpolated` frames when none of
/// the even picks has an interpolated person; sorted, without repeats.
pub fn pick_frames(n: usize, count: usize, interpolated: &[usize]) -> Vec<usize> {
    let count = count.min(n);
    if count == 0 {
        return Vec::new();
    }
    let mut picks: Vec<usize> = if count == 1 {
        vec![(n - 1) / 2]
    } else {
        (0..count)
            .map(|k| ((k * (n - 1)) as f64 / (count - 1) as f64).round() as usize)
            .collect()
    };
    let set: BTreeSet<usize> = interpolated.iter().copied().filter(|&f| f < n).collect();
    if !set.is_empty() && !picks.iter().any(|p| set.contains(p)) {
        // The longest run of consecutive interpolated frames, and its middle.
        let runs = set
            .iter()
            .fold(Vec::<(usize, usize)>::new(), |mut runs, &f| {
                match runs.last_mut() {
                    Some((_, end)) if *end + 1 == f => *end = f,
                    _ => runs.push((f, f)),
                }
                runs
            });
        let (a, b) = runs
            .into_iter()
            .max_by_key(|(a, b)| (b - a, std::cmp::Reverse(*a)))
            .expect("not empty");
        let mid = (a + b) / 2;
        let nearest = (0..picks.len())
            .min_by_key(|&k| picks[k].abs_diff(mid))
            .expect("not empty");
        picks[nearest] = mid;
    }
    picks.sort_unstable();
    picks.dedup();
    picks
}

/// The track table: id, first and last frame, frames and interpolated frames, one line each.
pub fn format_tracks(tracks: &[TrackInfo]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "  {:>5}  {:>11}  {:>10}  {:>6}  {:>12}",
        "track", "first frame", "last frame", "frames", "interpolated"
    );
    for k in tracks {
        let _ = writeln!(
            t,
            "  {:>5}  {:>11}  {:>10}  {:>6}  {:>12}",
            format!("#{}", k.track_id),
            k.first_frame,
            k.last_frame,
            k.frames,
            k.interpolated_frames
        );
    }
    if tracks.is_empty() {
        let _ = writeln!(t, "  (no tracks: no one was found in the clip)");
    }
    t
}

/// The track whose trajectory is plotted: the one with the most interpolated frames (it shows
/// a gap bridged), else track 1, else the longest.
fn plot_track(tracks: &[TrackInfo]) -> Option<u32> {
    tracks
        .iter()
        .filter(|t| t.interpolated_frames > 0)
        .max_by_key(|t| (t.interpolated_frames, std::cmp::Reverse(t.track_id)))
        .or_else(|| tracks.iter().find(|t| t.track_id == 1))
        .or_else(|| tracks.iter().max_by_key(|t| t.frames))
        .map(|t| t.track_id)
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The person of a frame's own result that is the tracked person `of` (index into `tracked`):
/// each the other's best box overlap, at least [`MATCH_IOU`].
pub fn matching_raw<'a>(
    tracked: &[TrackedPerson],
    of: usize,
    raw: &'a [Person],
) -> Option<&'a Person> {
    let best_raw = raw
        .iter()
        .enumerate()
        .map(|(k, r)| (k, iou(tracked[of].bbox, r.bbox)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if best_raw.1 < MATCH_IOU {
        return None;
    }
    let r = &raw[best_raw.0];
    let best_tracked = tracked
        .iter()
        .enumerate()
        .map(|(k, t)| (k, iou(t.bbox, r.bbox)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (best_tracked.0 == of).then_some(r)
}

/// One coordinate of one joint of a track, `[frame, pixels]` points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trajectory {
    /// From the frames' own results (the person matched by box).
    pub raw: Vec<[f64; 2]>,
    /// From the tracked output.
    pub smoothed: Vec<[f64; 2]>,
    /// The tracked output's interpolated frames alone.
    pub interpolated: Vec<[f64; 2]>,
}

/// Track `track_id`'s joint `joint`, coordinate `axis` (0: x, 1: y) in pixels by frame: from
/// the frames' own results (the person matched by box), from the tracked output, and the
/// tracked output's interpolated frames alone.
pub fn trajectory(
    frames: &[VideoFrame],
    raw: &BTreeMap<usize, JobResult>,
    track_id: u32,
    joint: usize,
    axis: usize,
) -> Trajectory {
    let (mut r, mut s, mut filled) = (Vec::new(), Vec::new(), Vec::new());
    for f in frames {
        let Some(k) = f.people.iter().position(|p| p.track_id == track_id) else {
            continue;
        };
        let n = f.frame_number as f64;
        let p = &f.people[k];
        if let Some(q) = p.keypoints_2d.get(joint) {
            s.push([n, q[axis] as f64]);
            if p.interpolated {
                filled.push([n, q[axis] as f64]);
            }
        }
        let own = raw
            .get(&(f.frame_number as usize))
            .and_then(|res| matching_raw(&f.people, k, &res.people))
            .and_then(|m| m.keypoints_2d.get(joint));
        if let Some(q) = own {
            r.push([n, q[axis] as f64]);
        }
    }
    Trajectory {
        raw: r,
        smoothed: s,
        interpolated: filled,
    }
}

/// Plots track `track_id`'s [`PLOT_JOINT`], x above and y below, raw against smoothed, into
/// `path`; returns in how many frames a raw result matched the track.
fn write_trajectory(
    path: &Path,
    frames: &[VideoFrame],
    raw: &BTreeMap<usize, JobResult>,
    track_id: u32,
) -> anyhow::Result<usize> {
    let (w, h) = (960, [440, 340]);
    let mut img = ::image::RgbImage::new(w, h[0] + h[1]);
    let mut matched = 0;
    for axis in 0..2 {
        let t = trajectory(frames, raw, track_id, PLOT_JOINT, axis);
        matched = matched.max(t.raw.len());
        let labels = Labels {
            title: if axis == 0 {
                format!("track {track_id}: {PLOT_JOINT_NAME}, raw vs smoothed")
            } else {
                String::new()
            },
            x: "frame".into(),
            y: if axis == 0 {
                "x (pixels)".into()
            } else {
                "y (pixels, down)".into()
            },
            legend: axis == 0,
        };
        let panel = plot::plot(w, h[axis], &labels, &trajectory_series(track_id, t));
        let top = if axis == 0 { 0 } else { h[0] as i64 };
        ::image::imageops::replace(&mut img, &panel, 0, top);
    }
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(matched)
}

/// The plot's series: raw dots, the smoothed line, rings on interpolated frames.
fn trajectory_series(track_id: u32, t: Trajectory) -> Vec<Series> {
    let Trajectory {
        raw,
        smoothed: smooth,
        interpolated: filled,
    } = t;
    let mut series = vec![
        Series {
            label: "raw: per-frame result".into(),
            colour: [150, 150, 150],
            mark: Mark::Dots,
            points: raw,
        },
        Series {
            label: "smoothed: tracked video output".into(),
            colour: overlay::track_colour(track_id),
            mark: Mark::Line,
            points: smooth,
        },
    ];
    if !filled.is_empty() {
        series.push(Series {
            label: "interpolated".into(),
            colour: [20, 20, 20],
            mark: Mark::Rings,
            points: filled,
        });
    }
    series
}

/// Draws the tracked people on the picked frames and writes `<name>.png` into `out`; returns
/// each path with a note naming the interpolated tracks on it.
fn write_overlays(
    out: &Path,
    inputs: &[Input],
    frames: &[VideoFrame],
    picks: &[usize],
    n: usize,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut written = Vec::new();
    for &i in picks {
        let (Some(input), Some(frame)) = (
            inputs.get(i),
            frames.iter().find(|f| f.frame_number as usize == i),
        ) else {
            continue;
        };
        let Ok(img) = ::image::load_from_memory(&input.bytes) else {
            continue;
        };
        let mut img = img.into_rgb8();
        let mut people = frame.people.clone();
        people.sort_by_key(|p| p.track_id);
        overlay::draw_tracked(&mut img, &people);
        let rows: Vec<LegendRow> = people
            .iter()
            .map(|p| LegendRow {
                colour: overlay::track_colour(p.track_id),
                dashed: p.interpolated,
                text: if p.interpolated {
                    format!("track {} interpolated (hidden or missed)", p.track_id)
                } else {
                    format!("track {}", p.track_id)
                },
            })
            .collect();
        overlay::draw_legend(&mut img, &format!("frame {i} of {n}"), &rows);
        let path = out.join(format!("{}.png", input.name));
        img.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        let filled: Vec<String> = people
            .iter()
            .filter(|p| p.interpolated)
            .map(|p| format!("#{}", p.track_id))
            .collect();
        let note = if filled.is_empty() {
            String::new()
        } else {
            format!("  (interpolated: {})", filled.join(", "))
        };
        written.push((path, note));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmr2_client::{BoxSource, Status};

    fn track(id: u32, first: u64, last: u64, interpolated: u64) -> TrackInfo {
        TrackInfo {
            track_id: id,
            first_frame: first,
            last_frame: last,
            frames: last - first + 1,
            interpolated_frames: interpolated,
        }
    }

    #[test]
    fn the_track_table_has_a_header_and_one_aligned_line_per_track() {
        let text = format_tracks(&[track(1, 0, 47, 0), track(2, 0, 47, 5), track(10, 30, 47, 0)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for h in [
            "track",
            "first frame",
            "last frame",
            "frames",
            "interpolated",
        ] {
            assert!(lines[0].contains(h), "{h} in {}", lines[0]);
        }
        let cells: Vec<Vec<&str>> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(cells[1], ["#2", "0", "47", "48", "5"]);
        assert_eq!(cells[2], ["#10", "30", "47", "18", "0"]);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
        assert!(format_tracks(&[]).contains("no tracks"));
    }

    #[test]
    fn picks_spread_over_the_clip_and_include_an_interpolated_frame() {
        assert_eq!(pick_frames(48, 6, &[]), vec![0, 9, 19, 28, 38, 47]);
        // Frames 21-25 interpolated, none of them an even pick: the run's middle replaces the
        // nearest pick.
        assert_eq!(
            pick_frames(48, 6, &[21, 22, 23, 24, 25]),
            vec![0, 9, 23, 28, 38, 47]
        );
        // The longest run wins over a single frame.
        assert!(pick_frames(48, 6, &[3, 30, 31, 32, 33]).contains(&31));
        // Already picked: left as it is.
        assert_eq!(pick_frames(48, 6, &[19, 20]), vec![0, 9, 19, 28, 38, 47]);
        assert_eq!(pick_frames(48, 0, &[5]), Vec::<usize>::new());
        assert_eq!(pick_frames(3, 10, &[]), vec![0, 1, 2]);
        assert_eq!(pick_frames(48, 1, &[40]), vec![40]);
        assert_eq!(pick_frames(1, 4, &[0]), vec![0]);
    }

    #[test]
    fn frame_ranges_are_written_compactly() {
        assert_eq!(frame_ranges(&[3, 4, 5, 6, 7, 12]), "3-7, 12");
        assert_eq!(frame_ranges(&[1]), "1");
        assert_eq!(frame_ranges(&[]), "");
    }

    fn tracked(id: u32, bbox: [f32; 4], x: f32, interpolated: bool) -> TrackedPerson {
        let eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        TrackedPerson {
            track_id: id,
            bbox,
            score: Some(0.9),
            box_source: BoxSource::Detector,
            global_orient: eye,
            body_pose: Vec::new(),
            betas: Vec::new(),
            pred_cam_t_full: [0.0, 0.0, 10.0],
            focal_length: 5000.0,
            keypoints_2d: vec![[x, 100.0]; 44],
            keypoints_3d: Vec::new(),
            interpolated,
            vertices: None,
        }
    }

    fn raw_person(bbox: [f32; 4], x: f32) -> Person {
        let t = tracked(0, bbox, x, false);
        Person {
            bbox,
            box_source: BoxSource::Detector,
            score: Some(0.9),
            box_center: [0.0, 0.0],
            box_size: 1.0,
            pred_cam: [1.0, 0.0, 0.0],
            pred_cam_t_full: t.pred_cam_t_full,
            focal_length: t.focal_length,
            global_orient: t.global_orient,
            body_pose: Vec::new(),
            betas: Vec::new(),
            keypoints_3d: Vec::new(),
            keypoints_2d: t.keypoints_2d,
            vertices: None,
        }
    }

    fn result(frame: u64, people: Vec<Person>) -> JobResult {
        let mut v = serde_json::json!({
            "v": 1, "job_id": format!("demo:{frame}"), "entry_id": "1-0",
            "video_id": "demo", "frame_number": frame, "status": "ok", "people": []
        });
        v["people"] = serde_json::to_value(&people).unwrap();
        serde_json::from_value(v).expect("a result")
    }

    #[test]
    fn the_trajectory_takes_raw_points_from_the_matching_person_only() {
        let a = [100.0, 100.0, 200.0, 400.0];
        let b = [600.0, 120.0, 680.0, 360.0];
        let frames = vec![
            VideoFrame {
                v: 1,
                video_id: "demo".into(),
                frame_number: 0,
                status: Status::Ok,
                error: None,
                people: vec![tracked(1, a, 150.0, false), tracked(2, b, 640.0, false)],
            },
            VideoFrame {
                v: 1,
                video_id: "demo".into(),
                frame_number: 1,
                status: Status::Ok,
                error: None,
                people: vec![tracked(1, a, 152.0, true), tracked(2, b, 641.0, false)],
            },
        ];
        let mut raw = BTreeMap::new();
        // Frame 0: both people found, listed the other way round.
        raw.insert(
            0,
            result(0, vec![raw_person(b, 639.0), raw_person(a, 147.0)]),
        );
        // Frame 1: track 1 was not found.
        raw.insert(1, result(1, vec![raw_person(b, 645.0)]));
        let t = trajectory(&frames, &raw, 1, PLOT_JOINT, 0);
        assert_eq!(t.raw, vec![[0.0, 147.0]]);
        assert_eq!(t.smoothed, vec![[0.0, 150.0], [1.0, 152.0]]);
        assert_eq!(t.interpolated, vec![[1.0, 152.0]]);
        let t2 = trajectory(&frames, &raw, 2, PLOT_JOINT, 0);
        assert_eq!(t2.raw, vec![[0.0, 639.0], [1.0, 645.0]]);
        let y = trajectory(&frames, &raw, 2, PLOT_JOINT, 1);
        assert_eq!((y.raw[0], y.smoothed[0]), ([0.0, 100.0], [0.0, 100.0]));
        // The track with interpolated frames is plotted, else track 1, else the longest.
        assert_eq!(plot_track(&[track(1, 0, 9, 0), track(2, 3, 4, 2)]), Some(2));
        assert_eq!(plot_track(&[track(2, 0, 9, 0), track(1, 3, 4, 0)]), Some(1));
        assert_eq!(plot_track(&[track(2, 0, 9, 0), track(3, 3, 4, 0)]), Some(2));
        assert_eq!(plot_track(&[]), None);
    }
}

/// The demo end to end: a throwaway redis-server, the worker in this process, the clip as one
/// tracked video (and images as frames of their own), what the user sees at the end.
#[cfg(test)]
mod end_to_end {
    use std::path::{Path, PathBuf};

    use hmr2_worker::config::Config;

    use super::super::{run_report, DemoOptions, TINY_DETECTOR};
    use super::{CLIP_FRAMES, DEFAULT_OVERLAYS};
    use crate::demo::overlay::track_colour;

    /// One worker at a time in this process.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace")
            .to_path_buf()
    }

    fn config() -> Config {
        let mut c = Config::defaults();
        c.model.path = repo().join("models/artifacts/hmr2-tiny.pt");
        c.model.device = "cpu".into();
        c.detector.path = repo().join(TINY_DETECTOR);
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_clip_runs_as_one_tracked_video_with_tracks_overlays_and_a_trajectory() {
        let _one = ONE_AT_A_TIME.lock().await;
        let out = tempfile::tempdir().unwrap();
        let report = run_report(
            config(),
            DemoOptions {
                out: out.path().join("demo-out"),
                ..DemoOptions::default()
            },
        )
        .await
        .expect("the demo runs");
        let text = &report.text;
        assert_eq!(report.failed, 0, "{text}");
        assert!(
            text.contains(&format!("{CLIP_FRAMES} ok, 0 failed")),
            "{text}"
        );
        // The tracks: a table with the two crossing figures and the late one.
        assert!(text.contains("tracks of video demo (3 tracks)"), "{text}");
        assert!(
            text.contains("track  first frame  last frame  frames  interpolated"),
            "{text}"
        );
        assert_eq!(report.tracks.len(), 3, "{text}");
        for (k, t) in report.tracks.iter().enumerate() {
            assert_eq!(t.track_id, k as u32 + 1);
            let line = format!("#{}", t.track_id);
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(&line)),
                "{text}"
            );
        }
        // The far figure, hidden behind the near one, is bridged by interpolation, and the
        // summary says how interpolated people are drawn.
        let bridged = report.tracks.iter().find(|t| t.interpolated_frames > 0);
        let bridged = bridged.expect("a track with interpolated frames");
        assert_eq!(
            (bridged.first_frame, bridged.last_frame),
            (0, CLIP_FRAMES as u64 - 1),
            "{text}"
        );
        assert!(text.contains("drawn faded, box dashed"), "{text}");
        // Overlays spread over the clip, one of them with the interpolated figure.
        assert_eq!(report.overlays.len(), DEFAULT_OVERLAYS, "{text}");
        assert!(text.contains("(interpolated: #"), "{text}");
        for p in &report.overlays {
            let img = ::image::open(p).expect("an overlay PNG").into_rgb8();
            assert_eq!(img.dimensions(), (1280, 720));
            let coloured = img.pixels().filter(|q| q.0 == track_colour(1)).count();
            assert!(
                coloured > 100,
                "{}: track 1 drawn in its colour",
                p.display()
            );
        }
        assert!(out.path().join("demo-out/frame-000.png").exists());
        assert!(out.path().join("demo-out/frame-047.png").exists());
        // The trajectory plot: both series drawn, the plotted track in its colour.
        let plot = report.trajectory.clone().expect("a trajectory plot");
        assert_eq!(plot, out.path().join("demo-out/trajectory.png"));
        let img = ::image::open(&plot).expect("a PNG").into_rgb8();
        let count = |c: [u8; 3]| img.pixels().filter(|q| q.0 == c).count();
        assert!(count(track_colour(bridged.track_id)) > 500, "smoothed line");
        assert!(count([150, 150, 150]) > 200, "raw dots");
        assert!(text.contains("trajectory.png"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn images_still_run_as_frames_of_their_own() {
        let _one = ONE_AT_A_TIME.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = crate::demo::frames::render(640, 360, 1, 3);
        for name in ["a.png", "b.png"] {
            img.save(dir.path().join(name)).unwrap();
        }
        let out = dir.path().join("out");
        let report = run_report(
            config(),
            DemoOptions {
                images: vec![dir.path().to_path_buf()],
                out: out.clone(),
                ..DemoOptions::default()
            },
        )
        .await
        .expect("the demo runs");
        let text = &report.text;
        assert!(text.contains("2 ok, 0 failed"), "{text}");
        assert!(!text.contains("tracks of video"), "{text}");
        assert!(report.tracks.is_empty() && report.trajectory.is_none());
        assert!(!out.join("trajectory.png").exists());
        assert_eq!(
            report.overlays,
            vec![out.join("a.png"), out.join("b.png")],
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_clip_longer_than_its_frames_is_refused_before_anything_starts() {
        let e = run_report(
            config(),
            DemoOptions {
                frames: Some(CLIP_FRAMES + 1),
                ..DemoOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("the clip has 48 frames"), "{e}");
        let e = run_report(
            config(),
            DemoOptions {
                frames: Some(0),
                ..DemoOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("give 1 to 48"), "{e}");
    }
}
