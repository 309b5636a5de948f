//! The compact record of one answered frame, as the worker stores it in Redis (one hash field
//! per frame) for the tracker: fixed-size little-endian f32 per person, rotations as unit
//! quaternions, no 2D keypoints (they are the projection of `keypoints_3d + cam_t`, recomputed
//! after smoothing).

/// Number of body-pose joints (SMPL joints 1..23).
pub const BODY_JOINTS: usize = 23;
/// Number of keypoints.
pub const KEYPOINTS: usize = 44;
/// Number of shape coefficients.
pub const BETAS: usize = 10;

/// Where a person's box came from (mirrors the result's `box_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxSource {
    /// The job gave the box.
    Job,
    /// The detector found it.
    Detector,
    /// The whole frame (no detector, or its `on_empty = "whole_frame"`).
    Frame,
}

/// One person of one frame as the model saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `[x1, y1, x2, y2]`, pixels.
    pub bbox: [f32; 4],
    /// Detector confidence, when the box came from the detector.
    pub score: Option<f32>,
    /// Where the box came from.
    pub box_source: BoxSource,
    /// Root rotation as a unit quaternion `[w, x, y, z]`.
    pub global_orient: [f32; 4],
    /// Joint rotations as unit quaternions `[w, x, y, z]`.
    pub body_pose: [[f32; 4]; BODY_JOINTS],
    /// SMPL shape coefficients.
    pub betas: [f32; BETAS],
    /// `pred_cam_t_full`, metres.
    pub cam_t: [f32; 3],
    /// Focal length used for `cam_t`, pixels.
    pub focal_length: f32,
    /// Body-frame keypoints, metres (as the result's `keypoints_3d`).
    pub keypoints_3d: [[f32; 3]; KEYPOINTS],
}

/// How a frame was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameStatus {
    /// A result (with zero or more people).
    Ok,
    /// An error result: its code and message.
    Error {
        /// The result's `error.code`.
        code: String,
        /// The result's `error.message`.
        message: String,
    },
}

/// One answered frame of a tracked video.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    /// Ok or error.
    pub status: FrameStatus,
    /// `[width, height]` (0 × 0 for an error frame without a decoded image).
    pub image_size: [u32; 2],
    /// The job asked for vertices.
    pub vertices: bool,
    /// The people found (none for an error frame).
    pub people: Vec<Observation>,
}

/// A record that cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("frame record: {0}")]
pub struct RecordError(pub String);

/// Format version written as the record's first byte.
pub const RECORD_VERSION: u8 = 1;

/// f32 values per person: bbox 4, score 1, global_orient 4, body_pose 23 × 4, betas 10,
/// cam_t 3, focal_length 1, keypoints_3d 44 × 3.
const PERSON_F32S: usize = 4 + 1 + 4 + BODY_JOINTS * 4 + BETAS + 3 + 1 + KEYPOINTS * 3;
/// Bytes per person: one flag byte (score present, box source) and the f32s.
pub const PERSON_BYTES: usize = 1 + PERSON_F32S * 4;

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;
const FLAG_SCORE: u8 = 0b0000_0001;
const SOURCE_SHIFT: u8 = 1;
const SOURCE_MASK: u8 = 0b0000_0110;

impl BoxSource {
    fn code(self) -> u8 {
        match self {
            BoxSource::Job => 0,
            BoxSource::Detector => 1,
            BoxSource::Frame => 2,
        }
    }

    fn from_code(code: u8) -> Option<BoxSource> {
        match code {
            0 => Some(BoxSource::Job),
            1 => Some(BoxSource::Detector),
            2 => Some(BoxSource::Frame),
            _ => None,
        }
    }
}

impl FrameRecord {
    /// The record as bytes: version, status, image size, vertices flag, the error's code and
    /// message (length-prefixed UTF-8) for an error frame, the number of people, then per person
    /// a flag byte and fixed-size little-endian f32s ([`PERSON_BYTES`] each, about 1 KB).
    ///
    /// A person's score is kept exactly (present or absent, by the flag byte); all floats keep
    /// their bits, NaN included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.people.len() * PERSON_BYTES);
        out.push(RECORD_VERSION);
        match &self.status {
            FrameStatus::Ok => out.push(STATUS_OK),
            FrameStatus::Error { .. } => out.push(STATUS_ERROR),
        }
        out.extend_from_slice(&self.image_size[0].to_le_bytes());
        out.extend_from_slice(&self.image_size[1].to_le_bytes());
        out.push(u8::from(self.vertices));
        if let FrameStatus::Error { code, message } = &self.status {
            put_str(&mut out, code);
            put_str(&mut out, message);
        }
        let count = u32::try_from(self.people.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        for person in self.people.iter().take(count as usize) {
            let mut flags = person.box_source.code() << SOURCE_SHIFT;
            if person.score.is_some() {
                flags |= FLAG_SCORE;
            }
            out.push(flags);
            let mut put = |v: f32| out.extend_from_slice(&v.to_le_bytes());
            person.bbox.iter().for_each(|&v| put(v));
            put(person.score.unwrap_or(f32::NAN));
            person.global_orient.iter().for_each(|&v| put(v));
            person.body_pose.iter().flatten().for_each(|&v| put(v));
            person.betas.iter().for_each(|&v| put(v));
            person.cam_t.iter().for_each(|&v| put(v));
            put(person.focal_length);
            person.keypoints_3d.iter().flatten().for_each(|&v| put(v));
        }
        out
    }

    /// Reads a record written by [`FrameRecord::encode`]. Truncated, trailing or otherwise
    /// malformed bytes are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<FrameRecord, RecordError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(RecordError(format!("unknown version {version}")));
        }
        let status = r.u8()?;
        let image_size = [r.u32()?, r.u32()?];
        let vertices = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(RecordError(format!("bad vertices flag {other}"))),
        };
        let status = match status {
            STATUS_OK => FrameStatus::Ok,
            STATUS_ERROR => FrameStatus::Error {
                code: r.string()?,
                message: r.string()?,
            },
            other => return Err(RecordError(format!("unknown status {other}"))),
        };
        let count = r.u32()? as usize;
        let remaining = bytes.len() - r.pos;
        if count.checked_mul(PERSON_BYTES) != Some(remaining) {
            return Err(RecordError(format!(
                "{count} people need {} bytes, {remaining} left",
                count.saturating_mul(PERSON_BYTES)
            )));
        }
        let mut people = Vec::with_capacity(count);
        for _ in 0..count {
            let flags = r.u8()?;
            if flags & !(FLAG_SCORE | SOURCE_MASK) != 0 {
                return Err(RecordError(format!("bad person flags {flags:#04x}")));
            }
            let box_source = BoxSource::from_code((flags & SOURCE_MASK) >> SOURCE_SHIFT)
                .ok_or_else(|| RecordError(format!("bad box source in flags {flags:#04x}")))?;
            let bbox = r.f32s::<4>()?;
            let score = r.f32()?;
            let global_orient = r.f32s::<4>()?;
            let mut body_pose = [[0.0; 4]; BODY_JOINTS];
            for q in &mut body_pose {
                *q = r.f32s::<4>()?;
            }
            let betas = r.f32s::<BETAS>()?;
            let cam_t = r.f32s::<3>()?;
            let focal_length = r.f32()?;
            let mut keypoints_3d = [[0.0; 3]; KEYPOINTS];
            for k in &mut keypoints_3d {
                *k = r.f32s::<3>()?;
            }
            people.push(Observation {
                bbox,
                score: (flags & FLAG_SCORE != 0).then_some(score),
                box_source,
                global_orient,
                body_pose,
                betas,
                cam_t,
                focal_length,
                keypoints_3d,
            });
        }
        Ok(FrameRecord {
            status,
            image_size,
            vertices,
            people,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| RecordError(format!("truncated at byte {}", self.pos)))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self) -> Result<f32, RecordError> {
        Ok(f32::from_bits(self.u32()?))
    }

    fn f32s<const N: usize>(&mut self) -> Result<[f32; N], RecordError> {
        let mut out = [0.0; N];
        for v in &mut out {
            *v = self.f32()?;
        }
        Ok(out)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.u32()? as usize;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError("string is not UTF-8".into()))
    }
}

/// The unit quaternion `[w, x, y, z]` of a rotation matrix (rows of `m`), with `w ≥ 0`.
///
/// The worker converts the model's `global_orient` and `body_pose` matrices with it. The
/// conversion branches on the trace and the largest diagonal element (nalgebra's, numerically
/// safe near 180°), then normalises, so a matrix a little off orthonormal (f32 round-off) still
/// gives a unit quaternion. A matrix far from any rotation gives a meaningless or non-finite
/// quaternion, which the tracker ignores like any non-finite value.
pub fn quat_from_matrix(m: [[f32; 3]; 3]) -> [f32; 4] {
    let mat = nalgebra::Matrix3::from_fn(|r, c| f64::from(m[r][c]));
    let rot = nalgebra::Rotation3::from_matrix_unchecked(mat);
    let q = nalgebra::UnitQuaternion::from_rotation_matrix(&rot).into_inner();
    let n = q.norm();
    let s = if q.w < 0.0 { -1.0 } else { 1.0 };
    let s = if n > 0.0 && n.is_finite() { s / n } else { s };
    [q.w, q.i, q.j, q.k].map(|v| (v * s) as f32)
}

/// The rotation matrix (rows) of a quaternion `[w, x, y, z]`, normalised first.
pub fn matrix_from_quat(q: [f32; 4]) -> [[f32; 3]; 3] {
    let q = nalgebra::UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(
        q[0], q[1], q[2], q[3],
    ));
    let m = q.to_rotation_matrix().into_inner();
    [
        [m[(0, 0)], m[(0, 1)], m[(0, 2)]],
        [m[(1, 0)], m[(1, 1)], m[(1, 2)]],
        [m[(2, 0)], m[(2, 1)], m[(2, 2)]],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn person_from(values: &[f32], flags: u8) -> Observation {
        let mut it = values.iter().copied();
        let mut next = || it.next().unwrap_or(0.0);
        let bbox = [next(), next(), next(), next()];
        let score = next();
        let global_orient = [next(), next(), next(), next()];
        let body_pose = std::array::from_fn(|_| [next(), next(), next(), next()]);
        let betas = std::array::from_fn(|_| next());
        let cam_t = [next(), next(), next()];
        let focal_length = next();
        let keypoints_3d = std::array::from_fn(|_| [next(), next(), next()]);
        Observation {
            bbox,
            score: (flags & 1 == 1).then_some(score),
            box_source: [BoxSource::Job, BoxSource::Detector, BoxSource::Frame]
                [usize::from(flags >> 1) % 3],
            global_orient,
            body_pose,
            betas,
            cam_t,
            focal_length,
            keypoints_3d,
        }
    }

    fn record_strategy(
        floats: impl Strategy<Value = f32> + Clone,
    ) -> impl Strategy<Value = FrameRecord> {
        let person = (prop::collection::vec(floats, PERSON_F32S), any::<u8>())
            .prop_map(|(v, flags)| person_from(&v, flags));
        (
            prop::option::of((".{0,20}", ".{0,200}")),
            any::<[u32; 2]>(),
            any::<bool>(),
            prop::collection::vec(person, 0..4),
        )
            .prop_map(|(error, image_size, vertices, people)| FrameRecord {
                status: match error {
                    None => FrameStatus::Ok,
                    Some((code, message)) => FrameStatus::Error { code, message },
                },
                image_size,
                vertices,
                people,
            })
    }

    proptest! {
        #[test]
        fn finite_records_round_trip(rec in record_strategy(-1e6f32..1e6)) {
            let bytes = rec.encode();
            prop_assert_eq!(FrameRecord::decode(&bytes), Ok(rec));
        }

        #[test]
        fn any_bits_round_trip(rec in record_strategy(any::<f32>())) {
            let bytes = rec.encode();
            let back = FrameRecord::decode(&bytes).expect("decodes");
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn truncated_records_are_errors(
            rec in record_strategy(-10f32..10.0),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = rec.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(FrameRecord::decode(&bytes[..cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(FrameRecord::decode(&longer).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
            let _ = FrameRecord::decode(&bytes);
        }

        #[test]
        fn quaternion_round_trip(axis in prop::array::uniform3(-1f32..1.0), angle in -3.1f32..3.1) {
            let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
            prop_assume!(n > 1e-3);
            let h = angle / 2.0;
            let q = [h.cos(), axis[0] / n * h.sin(), axis[1] / n * h.sin(), axis[2] / n * h.sin()];
            let back = quat_from_matrix(matrix_from_quat(q));
            let dot: f32 = q.iter().zip(&back).map(|(a, b)| a * b).sum();
            prop_assert!(dot.abs() > 1.0 - 1e-5, "{q:?} -> {back:?}");
            prop_assert!(back[0] >= 0.0);
        }
    }

    #[test]
    fn person_is_about_one_kilobyte() {
        const { assert!(PERSON_BYTES <= 1024) };
        let rec = FrameRecord {
            status: FrameStatus::Ok,
            image_size: [1280, 720],
            vertices: false,
            people: vec![person_from(&[0.5; PERSON_F32S], 1); 3],
        };
        assert!(rec.encode().len() <= 20 + 3 * PERSON_BYTES);
    }

    #[test]
    fn error_frames_keep_code_and_message() {
        let rec = FrameRecord {
            status: FrameStatus::Error {
                code: "invalid_image".into(),
                message: "not a JPEG — ünïcode".into(),
            },
            image_size: [0, 0],
            vertices: true,
            people: vec![],
        };
        assert_eq!(FrameRecord::decode(&rec.encode()), Ok(rec));
    }

    #[test]
    fn unknown_version_and_bad_utf8_are_errors() {
        let rec = FrameRecord {
            status: FrameStatus::Error {
                code: "x".into(),
                message: "y".into(),
            },
            image_size: [1, 1],
            vertices: false,
            people: vec![],
        };
        let mut bytes = rec.encode();
        bytes[0] = 2;
        assert!(FrameRecord::decode(&bytes).is_err());
        bytes[0] = RECORD_VERSION;
        let code_at = 1 + 1 + 8 + 1 + 4;
        bytes[code_at] = 0xff;
        assert!(FrameRecord::decode(&bytes).is_err());
    }

    #[test]
    fn slightly_skewed_matrices_give_unit_quaternions() {
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let mut m = matrix_from_quat([s, s, 0.0, 0.0]);
        m[0][0] *= 1.01;
        m[1][2] += 0.01;
        let q = quat_from_matrix(m);
        let n: f32 = q.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-6, "{q:?}");
        assert!((q[0] - s).abs() < 0.01 && (q[1] - s).abs() < 0.01, "{q:?}");
    }

    #[test]
    fn identity_and_half_turns() {
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(quat_from_matrix(id), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(matrix_from_quat([1.0, 0.0, 0.0, 0.0]), id);
        // 180° about x, y, z: w = 0 and the axis (up to sign).
        let half_turns = [
            ([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], 1),
            ([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]], 2),
            ([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]], 3),
        ];
        for (m, axis) in half_turns {
            let q = quat_from_matrix(m);
            assert!(q[0].abs() < 1e-6, "{q:?}");
            assert!((q[axis].abs() - 1.0).abs() < 1e-6, "{q:?}");
            let back = matrix_from_quat(q);
            for r in 0..3 {
                for c in 0..3 {
                    assert!((back[r][c] - m[r][c]).abs() < 1e-6);
                }
            }
        }
        // 90° about z maps x to y: column 0 of the matrix is (0, 1, 0).
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let m = matrix_from_quat([s, 0.0, 0.0, s]);
        assert!((m[1][0] - 1.0).abs() < 1e-6 && m[0][0].abs() < 1e-6);
    }
}
