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
        let entry = entry?;
        let path = entry.path();
        // `file_type` does not follow symlinks, so a link cycle cannot trap the walk.
        if entry.file_type()?.is_dir() {
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A fresh folder under the system temp dir, removed when dropped (also when a test fails).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!(
                "xtask-tidy-{}-{nanos}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(name);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn offender_names(report: &Report) -> Vec<&str> {
        report
            .offenders
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect()
    }

    #[test]
    fn finds_files_without_a_module_paragraph() {
        let dir = Scratch::new();
        dir.write("a/src/good.rs", "\n//! What lives here.\nfn f() {}\n");
        dir.write("a/src/indented.rs", "   \n  //! Leading blanks are fine.\n");
        dir.write("a/src/bad.rs", "// a plain comment\n//! too late\n");
        dir.write("a/src/outer.rs", "/// an outer doc comment\nfn f() {}\n");
        dir.write("a/src/empty.rs", "");
        dir.write("a/target/skipped.rs", "fn f() {}\n");
        dir.write("a/src/nested/target/skipped.rs", "fn f() {}\n");
        dir.write("a/src/notes.txt", "not rust");
        let report = check(&dir.0).unwrap();
        assert_eq!(offender_names(&report), ["bad.rs", "empty.rs", "outer.rs"]);
        assert_eq!(report.n_files, 5);
    }

    #[test]
    fn a_clean_tree_has_no_offenders() {
        let dir = Scratch::new();
        dir.write("x/src/lib.rs", "//! The library.\n");
        dir.write("x/tests/it/main.rs", "//! Integration tests.\n");
        let report = check(&dir.0).unwrap();
        assert!(report.offenders.is_empty(), "{:?}", report.offenders);
        assert_eq!(report.n_files, 2);
    }

    #[test]
    fn scratch_folders_are_unique_and_removed() {
        let (a, b) = (Scratch::new(), Scratch::new());
        assert_ne!(a.0, b.0);
        let path = a.0.clone();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn a_missing_tree_is_an_error_naming_it() {
        let err = check(Path::new("/nonexistent/xtask-tidy")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/xtask-tidy"), "{err}");
    }
}
