//! The module layout of `worker`, checked from the sources: no child imports from its parent
//! (the edges point down; what the stages share lives in `ctx`), and the layout the crate
//! documents is the tree on disk.

use std::path::Path;

/// The non-test part of a source file (everything before its first `#[cfg(test)]`).
fn production(src: &str) -> &str {
    src.split("#[cfg(test)]").next().unwrap_or(src)
}

/// The modules `worker.rs` declares.
fn children(root: &str) -> Vec<String> {
    root.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or(l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn no_file_under_worker_imports_from_its_parent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root = std::fs::read_to_string(dir.join("worker.rs")).unwrap();
    let children = children(&root);
    assert!(children.len() > 10, "modules of worker.rs: {children:?}");
    let mut offences = Vec::new();
    for child in &children {
        let file = dir.join("worker").join(format!("{child}.rs"));
        let src = std::fs::read_to_string(&file).unwrap();
        for (n, line) in production(&src).lines().enumerate() {
            // `super::x` or `crate::worker::x` must name a sibling module, never an item of
            // worker.rs itself.
            for path in ["super::", "crate::worker::"] {
                for (i, _) in line.match_indices(path) {
                    let rest = &line[i + path.len()..];
                    let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                        let group = group.split('}').next().unwrap_or("");
                        group.split(',').map(str::trim).collect()
                    } else {
                        vec![rest]
                    };
                    for name in names {
                        let head: String = name
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !head.is_empty() && !children.contains(&head) {
                            offences.push(format!("{child}.rs:{}: {}", n + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "imports from the parent module:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_documented_layout_is_the_tree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let root = std::fs::read_to_string(dir.join("worker.rs")).unwrap();
    let docs: String = root
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("worker"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_string))
        .filter(|f| f != "layout")
        .collect();
    on_disk.sort();
    let mut declared = children(&root);
    declared.retain(|c| c != "layout");
    declared.sort();
    assert_eq!(
        declared, on_disk,
        "worker.rs declares every file under src/worker/"
    );
    for m in &on_disk {
        assert!(
            docs.contains(&format!("`{m}`")) || docs.contains(&format!("[`{m}`]")),
            "the module doc of worker.rs names `{m}`"
        );
    }
}
