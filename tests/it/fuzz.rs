//! Property-based fuzzing of everything a hostile producer controls: the job JSON and the image
//! bytes. Every input must end in a job or an error code of the contract, without a panic and
//! without allocating beyond the configured limits. Runs a bounded number of cases in CI
//! (`PROPTEST_CASES` raises it); failures are kept by proptest in `proptest-regressions/`.

use std::sync::OnceLock;

use hmr2_client::ErrorCode;
use hmr2_worker::config::{Config, LimitsConfig};
use hmr2_worker::test_support::Entry;
use hmr2_worker::worker::prepare::prepare;
use proptest::prelude::*;

use crate::support::image;

fn limits() -> LimitsConfig {
    let mut l = Config::defaults().limits;
    l.max_pixels = 4_000_000;
    l.max_image_bytes = 1 << 20;
    l
}

fn seeds() -> &'static [Vec<u8>; 2] {
    static S: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    S.get_or_init(|| [image(96, 64, 3, false), image(64, 96, 4, true)])
}

fn keys() -> hmr2_client::Keys {
    hmr2_client::Keys::new("fuzz")
}

fn entry(job: &[u8], image: Option<Vec<u8>>) -> Entry {
    let mut fields = vec![(b"job".to_vec(), job.to_vec())];
    if let Some(i) = image {
        fields.push((b"image".to_vec(), i));
    }
    Entry::new("1-0", fields)
}

/// Arbitrary JSON values, a few levels deep, biased towards the contract's keys.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "\\PC{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("v".to_string()),
                    Just("job_id".to_string()),
                    Just("boxes".to_string()),
                    Just("include".to_string()),
                    Just("frame_number".to_string()),
                    Just("reply_to".to_string()),
                    "\\PC{0,10}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_a_job_end_in_a_job_or_a_code(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match prepare(&entry(&bytes, None), &keys(), &limits(), None) {
            Ok(_) => {}
            Err(r) => prop_assert!(ErrorCode::ALL.contains(&r.error.code())),
        }
    }

    #[test]
    fn any_json_job_ends_in_a_job_or_a_code(v in json_value(), with_image in any::<bool>()) {
        let img = with_image.then(|| seeds()[0].clone());
        match prepare(&entry(v.to_string().as_bytes(), img), &keys(), &limits(), None) {
            Ok(p) => prop_assert_eq!(p.crops.len(), p.people.len() * 256 * 256 * 3),
            Err(r) => prop_assert!(ErrorCode::ALL.contains(&r.error.code())),
        }
    }

    #[test]
    fn boxes_of_any_numbers_are_accepted_or_rejected_cleanly(
        boxes in prop::collection::vec(prop::array::uniform4(prop_oneof![any::<f64>(), -200.0..300.0f64]), 0..6)
    ) {
        let boxes: Vec<serde_json::Value> = boxes
            .iter()
            .map(|b| serde_json::json!(b.iter().map(|c| serde_json::Number::from_f64(*c).map_or(serde_json::Value::Null, serde_json::Value::Number)).collect::<Vec<_>>()))
            .collect();
        let job = serde_json::json!({"job_id": "b", "boxes": boxes}).to_string();
        match prepare(&entry(job.as_bytes(), Some(seeds()[1].clone())), &keys(), &limits(), None) {
            Ok(p) => prop_assert_eq!(p.people.len(), boxes.len().max(1)),
            Err(r) => prop_assert!(matches!(r.error.code().as_str(), "invalid_box" | "invalid_job"), "{}", r.error),
        }
    }

    #[test]
    fn mutated_images_decode_or_fail_cleanly(
        which in 0usize..2,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = seeds()[which].clone();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if truncate {
            let n = cut.index(bytes.len());
            bytes.truncate(n);
        }
        match prepare(&entry(br#"{"job_id":"m"}"#, Some(bytes)), &keys(), &limits(), None) {
            Ok(p) => prop_assert_eq!(p.people.len(), 1),
            Err(r) => prop_assert!(
                matches!(r.error.code().as_str(), "invalid_image" | "image_too_large" | "missing_image"),
                "{}", r.error
            ),
        }
    }

    #[test]
    fn a_header_claiming_huge_dimensions_is_refused_before_decoding(w in 1u32..200_000, h in 1u32..200_000) {
        let mut png = seeds()[1].clone();
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let r = prepare(&entry(br#"{"job_id":"bomb"}"#, Some(png)), &keys(), &limits(), None);
        if u64::from(w) * u64::from(h) > limits().max_pixels {
            let err = r.expect_err("over the pixel limit");
            prop_assert_eq!(err.error.code(), "image_too_large");
        }
    }
}

#[test]
fn unicode_ids_are_echoed_intact() {
    let job = serde_json::json!({"job_id": "кадр-🎞️-١٢", "video_id": "视频"}).to_string();
    let p = prepare(
        &entry(job.as_bytes(), Some(seeds()[0].clone())),
        &keys(),
        &limits(),
        None,
    )
    .unwrap();
    assert_eq!(p.echo.job_id.as_deref(), Some("кадр-🎞️-١٢"));
    assert_eq!(p.echo.video_id.as_deref(), Some("视频"));
}
