//! Test-only: reading the shared test vectors (`shared/vectors`, design.md §7), the one loader
//! every module's vector tests use. Compiled only under `cfg(test)`; it reads files, which the
//! crate itself never does.
//!
//! Refuses (by panicking, failing the test): a missing folder or file, a folder with no `*.json`
//! file, and a file that is not JSON.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `shared/vectors/<relative>` (the `shared` folder beside the checkout).
pub(crate) fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors")
        .join(relative)
}

/// One vector file, parsed.
pub(crate) fn load(relative: &str) -> Value {
    parse(&path(relative))
}

/// Every `*.json` file of a vector folder as `(file stem, JSON)`, in name order; fails when the
/// folder is missing or holds none.
pub(crate) fn load_folder(relative: &str) -> Vec<(String, Value)> {
    let dir = path(relative);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no vectors in {}", dir.display());
    paths
        .iter()
        .map(|path| {
            let name = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .expect("file name")
                .to_owned();
            (name, parse(path))
        })
        .collect()
}

/// Hex with or without `0x`.
pub(crate) fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text.trim_start_matches("0x")).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn parse(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
