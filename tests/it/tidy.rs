//! The architecture's dependency rules and size limits, checked on the source like any
//! other test (rust-analyzer's "tidy" tests): a rule that is written down fails here when
//! it is broken.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files.sort();
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file without its comments (`//` to the end of the line), so that a doc
/// comment may name what the code must not use.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
}

/// Only `store` names sqlx, and no code takes the store's pool (`store::testing` is the
/// integration tests' hatch: the one-connection TimescaleDB lane must check rows on the
/// store's own connection).
#[test]
fn only_store_uses_sqlx_and_no_code_takes_its_pool() {
    let store = src().join("store");
    let sources = sources(&src());
    assert!(sources.len() > 10, "{} files", sources.len());
    for (path, text) in sources {
        for line in code_lines(&text) {
            if !path.starts_with(&store) {
                assert!(
                    !line.contains("sqlx::") && !line.contains("use sqlx"),
                    "{} uses sqlx outside store: {line}",
                    path.display()
                );
            }
            if path != store.join("testing.rs") {
                assert!(
                    !line.contains("connect_sharing_pool"),
                    "{} takes the store's pool through store::testing: {line}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn predict_never_imports_training() {
    for (path, text) in sources(&src().join("predict")) {
        for line in code_lines(&text) {
            assert!(
                !line.contains("crate::training") && !line.contains("training::"),
                "{} reaches into the trainer: {line}",
                path.display()
            );
        }
    }
}

#[test]
fn the_edge_is_thin_and_no_file_is_huge() {
    for (path, text) in sources(&src()) {
        let n_lines = text.lines().count();
        let limit = if path.ends_with("main.rs") { 150 } else { 700 };
        assert!(
            n_lines <= limit,
            "{} has {n_lines} lines (at most {limit})",
            path.display()
        );
    }
}
