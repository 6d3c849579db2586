//! The tidy check: every `.rs` file under a tree opens with a `//!` paragraph saying what
//! lives there (the first non-empty line starts with `//!`). `target` folders are skipped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What a tidy run found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) n_files: usize,
    pub(crate) offenders: Vec<PathBuf>,
}

/// Checks every `.rs` file under `dir`, in path order.
pub(crate) fn check(dir: &Path) -> io::Result<Report> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut report = Report::default();
    for path in files {
        report.n_files += 1;
        let text = fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if !opens_with_module_doc(&text) {
            report.offenders.push(path);
        }
    }
    Ok(report)
}

fn opens_with_module_doc(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with("//!"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_without_a_module_paragraph() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        fs::create_dir_all(dir.join("a/src")).unwrap();
        fs::create_dir_all(dir.join("a/target")).unwrap();
        fs::write(
            dir.join("a/src/good.rs"),
            "\n//! What lives here.\nfn f() {}\n",
        )
        .unwrap();
        fs::write(
            dir.join("a/src/bad.rs"),
            "// a plain comment\n//! too late\n",
        )
        .unwrap();
        fs::write(dir.join("a/src/empty.rs"), "").unwrap();
        fs::write(dir.join("a/target/skipped.rs"), "fn f() {}\n").unwrap();
        fs::write(dir.join("a/src/notes.txt"), "not rust").unwrap();
        let report = check(&dir).unwrap();
        let names: Vec<_> = report
            .offenders
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["bad.rs", "empty.rs"]);
        assert_eq!(report.n_files, 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_tree_is_an_error_naming_it() {
        let err = check(Path::new("/nonexistent/xtask-tidy")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/xtask-tidy"), "{err}");
    }
}
