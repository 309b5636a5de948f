//! Frames from files: what a producer reads before it adds a video.

use std::io;
use std::path::{Path, PathBuf};

/// The image files named by `paths`: files as given, folders scanned for `.jpg`, `.jpeg` and
/// `.png` (any case) in name order. A path that does not exist is an error.
pub fn image_files(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
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
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", p.display()),
            ));
        }
    }
    Ok(out)
}

/// The bytes of every image in the folder `dir` (see [`image_files`]), in name order: the
/// frames of one video, as `producer::add_video` takes them. A folder without images is an
/// error.
pub fn images_in(dir: impl AsRef<Path>) -> io::Result<Vec<Vec<u8>>> {
    let dir = dir.as_ref();
    let files = image_files(&[dir.to_path_buf()])?;
    if files.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no .jpg, .jpeg or .png files in {}", dir.display()),
        ));
    }
    files.iter().map(std::fs::read).collect()
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
    fn a_folders_images_are_read_in_name_order_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("hmr2-images-in-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in [("f-10.JPG", b"b"), ("f-09.png", b"a"), ("notes.txt", b"x")] {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        assert_eq!(images_in(&dir).unwrap(), [b"a".to_vec(), b"b".to_vec()]);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = images_in(&empty).unwrap_err().to_string();
        assert!(e.contains("no .jpg"), "{e}");
        assert!(images_in(dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
