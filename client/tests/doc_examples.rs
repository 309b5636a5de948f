//! Every JSON example in the documentation (`README.md`, `docs/*.md`) is valid against the
//! schema it shows. Each fenced ```json block carries a marker on the line before it naming
//! that schema, `<!-- schema: result -->` (`job`, `result`, `video-frame`, `video-done`,
//! `model`: the files of `schemas/`), or `<!-- schema: none -->` for JSON that is not wire
//! JSON; a note may follow the name (`<!-- schema: result (arrays shortened) -->`). A block
//! without a marker fails, and so does unlabelled JSON in a plain fence, so a new example
//! cannot slip past.

use std::path::{Path, PathBuf};

use hmr2_client::schema::FILES;
use serde_json::Value;

/// One fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's info string (`json`, `python`, empty).
    info: String,
    /// The schema named on the line before the fence, if that line is a marker.
    marker: Option<String>,
    /// The text between the fences.
    text: String,
}

/// `<!-- schema: NAME ... -->` → `NAME`.
fn marker_of(line: &str) -> Option<String> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim();
    let rest = inner.strip_prefix("schema:")?.trim();
    let name = rest.split_whitespace().next()?;
    Some(name.to_string())
}

/// The fenced blocks of a Markdown text; markers that precede no fence are errors.
fn blocks(text: &str) -> (Vec<Block>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = lines[i].len() - trimmed.len();
            let marker = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| marker_of(l));
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
                i += 1;
            }
            out.push(Block {
                line: start + 1,
                info: info.trim().to_string(),
                marker,
                text: body.join("\n"),
            });
        } else if marker_of(lines[i]).is_some() {
            let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            if !next.is_some_and(|l| l.trim_start().starts_with("```")) {
                errors.push(format!(
                    "line {}: a schema marker with no fenced block after it",
                    i + 1
                ));
            }
        }
        i += 1;
    }
    (out, errors)
}

/// What is wrong with the examples of one Markdown text, and how many were validated.
fn check(text: &str) -> (Vec<String>, usize) {
    let names: Vec<&str> = FILES
        .iter()
        .map(|f| f.file.trim_end_matches(".schema.json"))
        .collect();
    let (blocks, mut errors) = blocks(text);
    let mut validated = 0;
    for b in blocks {
        let at = format!("line {}", b.line);
        let is_json = b.info.split_whitespace().next() == Some("json");
        let Some(name) = b.marker else {
            if is_json {
                errors.push(format!(
                    "{at}: a ```json block needs a `<!-- schema: NAME -->` line before it \
                     (NAME: {}, or none)",
                    names.join(", ")
                ));
            } else if serde_json::from_str::<Value>(&b.text)
                .is_ok_and(|v| v.is_object() || v.is_array())
            {
                errors.push(format!(
                    "{at}: JSON in a ```{} fence: label it ```json and mark its schema",
                    b.info
                ));
            }
            continue;
        };
        if !is_json {
            errors.push(format!(
                "{at}: a schema marker before a ```{} fence, not ```json",
                b.info
            ));
            continue;
        }
        if name == "none" {
            continue;
        }
        let Some(file) = FILES
            .iter()
            .find(|f| f.file.trim_end_matches(".schema.json") == name)
        else {
            errors.push(format!(
                "{at}: unknown schema `{name}` (known: {}, none)",
                names.join(", ")
            ));
            continue;
        };
        let example: Value = match serde_json::from_str(&b.text) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{at}: not valid JSON: {e}"));
                continue;
            }
        };
        let validator = jsonschema::draft202012::new(&(file.generate)()).unwrap();
        let faults: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| format!("{e} at `{}`", e.instance_path()))
            .collect();
        if faults.is_empty() {
            validated += 1;
        } else {
            errors.push(format!("{at}: not a valid {name}: {}", faults.join("; ")));
        }
    }
    (errors, validated)
}

fn documentation() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_json_example_in_the_documentation_is_valid_against_its_schema() {
    let mut errors = Vec::new();
    let mut validated = 0;
    for path in documentation() {
        let text = std::fs::read_to_string(&path).unwrap();
        let (e, n) = check(&text);
        validated += n;
        let shown = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .unwrap_or(&path)
            .display()
            .to_string();
        errors.extend(e.into_iter().map(|e| format!("{shown} {e}")));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // README.md shows a result at least.
    assert!(validated >= 1, "no example was validated");
}

#[test]
fn the_check_finds_unmarked_invalid_and_hidden_examples() {
    let ok = r#"{"v":1,"video_id":"c","status":"ok","frames":1,"ok_frames":1,"error_frames":0,"missing_frames":0,"fps":25,"tracks":[],"timings_ms":{"tracking":1.0,"total":2.0}}"#;
    let good = format!("text\n<!-- schema: video-done (a note) -->\n\n```json\n{ok}\n```\n");
    assert_eq!(check(&good), (vec![], 1));
    let none = "<!-- schema: none -->\n```json\n{\"anything\": [1, 2]}\n```\n";
    assert_eq!(check(none), (vec![], 0));
    // Unmarked.
    let (e, _) = check(&format!("```json\n{ok}\n```\n"));
    assert!(e[0].contains("needs a `<!-- schema: NAME -->`"), "{e:?}");
    // Not valid JSON (a placeholder), and valid JSON of the wrong shape.
    let (e, _) = check("<!-- schema: result -->\n```json\n{\"box\": [x1, y1]}\n```\n");
    assert!(e[0].contains("not valid JSON"), "{e:?}");
    let (e, _) = check(&format!("<!-- schema: result -->\n```json\n{ok}\n```\n"));
    assert!(e[0].contains("not a valid result"), "{e:?}");
    // An unknown schema, a marker with no block, JSON hidden in a plain fence.
    let (e, _) = check("<!-- schema: frame -->\n```json\n{}\n```\n");
    assert!(e[0].contains("unknown schema `frame`"), "{e:?}");
    let (e, _) = check("<!-- schema: job -->\nsome text\n");
    assert!(e[0].contains("no fenced block"), "{e:?}");
    let (e, _) = check("```\n{\"job_id\": \"a\"}\n```\n");
    assert!(e[0].contains("label it ```json"), "{e:?}");
    // Other fences are left alone.
    assert_eq!(check("```sh\nredis-cli XLEN hmr2:jobs\n```\n"), (vec![], 0));
}
