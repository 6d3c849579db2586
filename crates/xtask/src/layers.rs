//! The layers check: the one-job crates keep to their rooms. Each rule names a crate and the
//! workspace crates it must not depend on (its `[dependencies]`, dev-dependencies aside):
//! - the monitor never writes state and never confines: no engine, store, supervisor, cgroups;
//! - the engine spawns nothing and reads no host: no supervisor, cgroups or host readers (the
//!   monitor it starts does the reading);
//! - the supervisor changes the ledger only through the engine's commands: no scheduler.

use std::fs;
use std::io;
use std::path::Path;

/// (crate, workspace crates it must not depend on).
pub(crate) const RULES: &[(&str, &[&str])] = &[
    (
        "qm-monitor",
        &[
            "qm-engine",
            "qm-store",
            "qm-supervisor",
            "qm-cgroup",
            "qm-sched",
        ],
    ),
    ("qm-engine", &["qm-supervisor", "qm-cgroup", "qm-sys"]),
    ("qm-supervisor", &["qm-sched"]),
];

/// The names in the `[dependencies]` table of a Cargo.toml's text.
pub(crate) fn dependencies(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or_default()
            .trim();
        if !name.is_empty() {
            out.push(name.to_owned());
        }
    }
    out
}

/// Every broken rule under `crates`: "crate depends on forbidden".
pub(crate) fn check(crates: &Path) -> io::Result<Vec<String>> {
    let mut broken = Vec::new();
    for (krate, forbidden) in RULES {
        let path = crates.join(krate).join("Cargo.toml");
        let text = fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        for dep in dependencies(&text) {
            if forbidden.contains(&dep.as_str()) {
                broken.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    Ok(broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dependencies_table_only() {
        let text = "[package]\nname = \"x\"\n[dependencies]\nqm-core.workspace = true\n\
                    tokio = { version = \"1\" }\n# note\n\n[dev-dependencies]\nqm-store.workspace = true\n";
        assert_eq!(dependencies(text), ["qm-core", "tokio"]);
    }

    #[test]
    fn the_workspace_keeps_its_layers() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert_eq!(check(&crates).unwrap(), Vec::<String>::new());
    }
}
