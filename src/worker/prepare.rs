//! The CPU stage of one job: parse, decode, check boxes, crop; for a job without boxes and a
//! worker with a detector, decode and letterbox now, crop once the detector has answered
//! ([`crop_detected`]). Runs on blocking threads.

use std::time::Instant;

use metrics::{counter, histogram};

use hmr2_client::{BoxSource, Echo, Include, Keys};

use crate::config::{DetectorConfig, LimitsConfig, OnEmpty};
use crate::detector::{self, Detection};
use crate::error::InputError;
use crate::image::{self, CropBox, Letterboxed, Limits, Pixels, CROP_BYTES};
use crate::metrics as m;
use crate::queue::Entry;
use crate::video::VideoTag;

use super::delivery::{PixelBudget, PixelCharge};

/// A person to run: the box (the job's, the detector's or the whole frame) and its crop
/// geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersonBox {
    pub bbox: [f32; 4],
    pub crop: CropBox,
    pub source: BoxSource,
    /// The detector's confidence, for detected boxes.
    pub score: Option<f32>,
}

impl PersonBox {
    fn new(bbox: [f32; 4], source: BoxSource, score: Option<f32>) -> Self {
        PersonBox {
            bbox,
            crop: image::crop_box(bbox),
            source,
            score,
        }
    }
}

/// A frame waiting for the detector: the decoded frame (its crops are cut once the boxes are
/// known) and its letterbox. The frame's share of the decoded-pixel budget is given back with
/// it.
#[derive(Debug)]
pub struct AwaitingDetection {
    pub frame: Pixels,
    pub letterbox: Letterboxed,
    charge: Option<PixelCharge>,
}

/// A job ready for the device: its crops, one per person, back to back. The job's image (and
/// its base64 text) is gone by now; only what the result needs stays.
#[derive(Debug)]
pub struct Prepared {
    pub echo: Echo,
    pub include: Include,
    pub image_size: [u32; 2],
    pub people: Vec<PersonBox>,
    pub crops: Vec<u8>,
    /// Where the frame's boxes come from (`detector` even when it found nobody).
    pub source: BoxSource,
    /// Set while the frame waits for the detector; `people` and `crops` are empty until then.
    pub detect: Option<AwaitingDetection>,
    /// CPU time of the job on the decode threads: parse + decode + letterbox + crop,
    /// milliseconds (the result reports it as `timings_ms.decode`).
    pub cpu_ms: f64,
    /// The frame of a tracked video this job is, if any.
    pub video: Option<VideoTag>,
    /// How many people the detector found before the `max_boxes` cap (when it ran).
    pub detected: Option<u32>,
}

/// A job rejected for its input, with what can be echoed and the image size when known.
#[derive(Debug)]
pub struct Rejected {
    pub error: InputError,
    pub echo: Echo,
    pub image_size: Option<[u32; 2]>,
    /// The frame of a tracked video this job is, when it could be read.
    pub video: Option<VideoTag>,
}

/// What the worker decides for a frame before decoding it: its size, the people to run (the
/// job's boxes, checked, or the whole frame) and the DCT scale to decode at.
#[derive(Debug, Clone)]
pub struct Plan {
    pub info: image::ImageInfo,
    pub people: Vec<PersonBox>,
    pub scale: u32,
}

/// Plans one frame: probes `bytes` within `limits`, checks `boxes` against the image (none: the
/// whole frame) and picks the decode scale. On a bad box the error comes with the image size.
pub fn plan(
    bytes: &[u8],
    boxes: &[[f64; 4]],
    limits: &Limits,
) -> Result<Plan, (InputError, Option<[u32; 2]>)> {
    let info = image::probe(bytes, limits).map_err(|e| (e, None))?;
    let size = [info.width, info.height];
    let people: Vec<PersonBox> = if boxes.is_empty() {
        let whole = image::full_frame_box(info.width, info.height);
        vec![PersonBox::new(whole, BoxSource::Frame, None)]
    } else {
        boxes
            .iter()
            .map(|b| {
                let bbox = image::validate_box(*b, info.width, info.height)?;
                Ok(PersonBox::new(bbox, BoxSource::Job, None))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| (e, Some(size)))?
    };
    let min_box = people
        .iter()
        .map(|p| p.crop.size)
        .fold(f32::INFINITY, f32::min);
    Ok(Plan {
        info,
        people,
        scale: image::jpeg_scale_for(min_box),
    })
}

/// Parses the entry's `job` field (a `reply_to` outside `keys.results*` is `invalid_job`; the
/// entry keeps where the job's members are written, for [`Entry::strip_frame`]),
/// decodes its image and crops every person. With a detector
/// (`detector_input`: its square side) and no boxes in the job, letterboxes the frame instead
/// and keeps it for [`crop_detected`].
pub fn prepare(
    entry: &Entry,
    keys: &Keys,
    limits: &LimitsConfig,
    detector_input: Option<u32>,
) -> Result<Prepared, Box<Rejected>> {
    prepare_within(entry, keys, limits, detector_input, None)
}

/// [`prepare`], charging the frame's decoded pixels to `budget` before decoding it (waiting
/// until they fit) for as long as the frame is kept: until its crops are cut, here or in
/// [`crop_detected`].
pub(crate) fn prepare_within(
    entry: &Entry,
    keys: &Keys,
    limits: &LimitsConfig,
    detector_input: Option<u32>,
    budget: Option<&PixelBudget>,
) -> Result<Prepared, Box<Rejected>> {
    let t = Instant::now();
    let reject = |error: InputError, echo: &Echo, image_size: Option<[u32; 2]>| {
        Box::new(Rejected {
            error,
            echo: echo.clone(),
            image_size,
            video: None,
        })
    };
    let raw_image = entry.field("image").filter(|b| !b.is_empty());
    let Some(parsed) = entry.parse_job(raw_image.is_some(), &limits.job()) else {
        return Err(reject(
            InputError::InvalidJob("the stream entry has no `job` field".into()),
            &Echo::default(),
            None,
        ));
    };
    // A rejected frame of a tracked video is an error frame of it, when it says which.
    let job = parsed.map_err(|e| {
        let mut r = reject(e.error, &e.echo, None);
        r.video = VideoTag::of_echo(&e.echo, keys, limits.max_video_frames);
        r
    })?;
    let echo = &job.echo();
    if let Some(r) = job.reply_to.as_deref() {
        if !keys.accepts_reply_to(r) {
            let e = format!(
                "reply_to must start with \"{}:\" (or be {:?}); got {r:?}",
                keys.results, keys.results
            );
            let mut r = reject(InputError::InvalidJob(e), echo, None);
            r.video = VideoTag::of_echo(echo, keys, limits.max_video_frames);
            return Err(r);
        }
    }
    let video = match VideoTag::of(&job, keys, limits.max_video_frames) {
        Ok(v) => v,
        Err(e) => return Err(reject(InputError::InvalidJob(e), echo, None)),
    };
    // From here on a rejected job is still a frame of its video (an error frame).
    let reject = |error: InputError, echo: &Echo, image_size: Option<[u32; 2]>| {
        Box::new(Rejected {
            error,
            echo: echo.clone(),
            image_size,
            video: video.clone(),
        })
    };

    if let Some(len) = entry.cut_image {
        // Over the limit, so it was not even sent.
        let e = format!("{len} bytes, limit {}", limits.max_image_bytes);
        return Err(reject(InputError::ImageTooLarge(e), echo, None));
    }
    let decoded_b64;
    let bytes: &[u8] = match (raw_image, &job.image_base64) {
        (Some(b), _) => b,
        (None, Some(s)) => {
            decoded_b64 = image::decode_base64(s.as_ref(), limits.max_image_bytes)
                .map_err(|e| reject(e, echo, None))?;
            &decoded_b64
        }
        (None, None) => return Err(reject(InputError::MissingImage, echo, None)),
    };
    let lim = Limits {
        max_image_bytes: limits.max_image_bytes,
        max_pixels: limits.max_pixels,
    };
    let Plan {
        info,
        people,
        scale,
    } = plan(bytes, &job.boxes, &lim).map_err(|(e, size)| reject(e, echo, size))?;
    let size = [info.width, info.height];
    let detect = detector_input.filter(|_| job.boxes.is_empty());
    // Detected people can be small: their frame is decoded at full size.
    let scale = if detect.is_some() { 1 } else { scale };
    // Charged at full size (an upper bound at any scale): 3 bytes per pixel. Time spent
    // waiting for the budget is not the job's CPU time.
    let waiting = Instant::now();
    let pixels = 3 * u64::from(info.width) * u64::from(info.height);
    let charge = budget.map(|b| b.charge_blocking(pixels));
    let waited = waiting.elapsed();
    let frame = image::decode(bytes, &info, scale).map_err(|e| reject(e, echo, Some(size)))?;
    let decoded = t.elapsed().saturating_sub(waited).as_secs_f64();
    histogram!(m::STAGE_DURATION, "stage" => m::stage::DECODE).record(decoded);
    if let Some(side) = detect {
        let t2 = Instant::now();
        let letterbox = image::letterbox(&frame, side);
        let boxed = t2.elapsed().as_secs_f64();
        histogram!(m::STAGE_DURATION, "stage" => m::stage::LETTERBOX).record(boxed);
        return Ok(Prepared {
            echo: echo.clone(),
            include: job.include,
            image_size: size,
            people: Vec::new(),
            crops: Vec::new(),
            source: BoxSource::Detector,
            detect: Some(AwaitingDetection {
                frame,
                letterbox,
                charge,
            }),
            cpu_ms: (decoded + boxed) * 1e3,
            video,
            detected: None,
        });
    }
    let source = if job.boxes.is_empty() {
        BoxSource::Frame
    } else {
        BoxSource::Job
    };

    let t2 = Instant::now();
    let mut crops = vec![0u8; people.len() * CROP_BYTES];
    for (p, slot) in people.iter().zip(crops.chunks_exact_mut(CROP_BYTES)) {
        image::crop_into(&frame, &p.crop, slot);
    }
    drop(frame);
    drop(charge);
    let cropped = t2.elapsed().as_secs_f64();
    histogram!(m::STAGE_DURATION, "stage" => m::stage::PREPROCESS).record(cropped);
    Ok(Prepared {
        echo: echo.clone(),
        include: job.include,
        image_size: size,
        people,
        crops,
        source,
        detect: None,
        cpu_ms: (decoded + cropped) * 1e3,
        video,
        detected: None,
    })
}

/// Turns a frame's detections into people (see [`detector::select_people`]; nobody found:
/// per `on_empty`) and cuts their crops from the kept frame, which is then dropped.
pub fn crop_detected(p: &mut Prepared, dets: &[Detection], cfg: &DetectorConfig, max_boxes: usize) {
    let Some(AwaitingDetection {
        frame,
        letterbox,
        charge,
    }) = p.detect.take()
    else {
        return;
    };
    let t = Instant::now();
    let [w, h] = p.image_size;
    let (kept, found) = detector::select_people(dets, letterbox.r, w, h, cfg, max_boxes);
    if found > kept.len() {
        counter!(m::FRAMES_TRUNCATED).increment(1);
    }
    p.detected = Some(u32::try_from(found).unwrap_or(u32::MAX));
    let mut people: Vec<PersonBox> = kept
        .into_iter()
        .map(|(bbox, score)| PersonBox::new(bbox, BoxSource::Detector, Some(score)))
        .collect();
    if people.is_empty() && cfg.on_empty == OnEmpty::WholeFrame {
        let whole = image::full_frame_box(w, h);
        people.push(PersonBox::new(whole, BoxSource::Frame, None));
        p.source = BoxSource::Frame;
    }
    let mut crops = vec![0u8; people.len() * CROP_BYTES];
    for (person, slot) in people.iter().zip(crops.chunks_exact_mut(CROP_BYTES)) {
        image::crop_into(&frame, &person.crop, slot);
    }
    drop(frame);
    drop(charge);
    p.people = people;
    p.crops = crops;
    let cropped = t.elapsed().as_secs_f64();
    histogram!(m::STAGE_DURATION, "stage" => m::stage::PREPROCESS).record(cropped);
    p.cpu_ms += cropped * 1e3;
}
