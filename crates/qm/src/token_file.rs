//! The admin token file and how the CLI finds it. `qm serve` reads `--admin-token-file`
//! (default `<data-dir>/admin.token`) or, when it does not exist, writes a new random token
//! there (mode 0600, never overwriting). Once listening it leaves a pointer, named by its
//! port, to that file in a directory only its user can write (`/run/qm` for root, else
//! `$XDG_RUNTIME_DIR/qm` or `/tmp/qm-<uid>`), so a CLI on the same host and with the right
//! to read the token finds it without being told. The pointer holds a path, never the token.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The admin token in `path`, made (0600) when the file does not exist.
pub(crate) fn bootstrap(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.len() < 16 {
                bail!(
                    "admin token file {}: holds {} characters; a token needs at least 16",
                    path.display(),
                    token.len()
                );
            }
            if let Ok(m) = std::fs::metadata(path)
                && m.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", m.permissions().mode() & 0o777), "the admin token file is readable by other users; chmod 600 it");
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("admin token file: cannot create {}", dir.display())
                })?;
            }
            let secret = qm_engine::tokens::random_hex(32)
                .map_err(|e| anyhow::anyhow!("admin token: {e}"))?;
            let token = format!("qm_bootstrap_{secret}");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("admin token file: cannot create {}", path.display()))?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("admin token file: cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "wrote a new admin token");
            Ok(token)
        }
        Err(e) => {
            Err(e).with_context(|| format!("admin token file: cannot read {}", path.display()))
        }
    }
}

fn uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Where pointers live for the current user, most specific first.
fn pointer_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if uid() == 0 {
        dirs.push(PathBuf::from("/run/qm"));
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        dirs.push(PathBuf::from(x).join("qm"));
    }
    dirs.push(std::env::temp_dir().join(format!("qm-{}", uid())));
    dirs
}

/// Leaves a pointer from `port` to `token_file` for the CLI; returns it, to remove at exit.
pub(crate) fn publish(port: u16, token_file: &Path) -> Option<PathBuf> {
    let target = std::fs::canonicalize(token_file).ok()?;
    for dir in pointer_dirs() {
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .is_err()
        {
            continue;
        }
        // only a directory of ours, closed to others, is trusted
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if meta.uid() != uid() || meta.mode() & 0o022 != 0 {
            continue;
        }
        let pointer = dir.join(port.to_string());
        if std::fs::write(&pointer, format!("{}\n", target.display())).is_ok() {
            return Some(pointer);
        }
    }
    None
}

/// Removes `pointer` if it still names `token_file` (another daemon may have taken the port).
pub(crate) fn unpublish(pointer: &Path, token_file: &Path) {
    let ours = std::fs::canonicalize(token_file).ok();
    let named = std::fs::read_to_string(pointer)
        .ok()
        .map(|s| PathBuf::from(s.trim()));
    if ours.is_some() && ours == named {
        let _ = std::fs::remove_file(pointer);
    }
}

/// The admin token of the daemon at `server`, when it runs on this host, left a pointer,
/// and this user may read its token file; else the default data dir's, for the default
/// server.
pub(crate) fn discover(server: &str) -> Option<String> {
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]") || host.starts_with("127.");
    if !local {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let mut dirs = pointer_dirs();
    // a root daemon's pointers, for an admin CLI not itself root (read where permitted)
    dirs.push(PathBuf::from("/run/qm"));
    for dir in dirs {
        if let Some(target) = read(&dir.join(port.to_string()))
            && let Some(token) = read(Path::new(&target))
        {
            return Some(token);
        }
    }
    (port == 7070)
        .then(|| read(Path::new("qm-data/admin.token")))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_private_and_an_existing_one_is_kept() {
        let dir = std::env::temp_dir().join(format!("qm-token-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/admin.token");
        let made = bootstrap(&path).unwrap();
        assert!(
            made.starts_with("qm_bootstrap_") && made.len() == 13 + 64,
            "{made}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(bootstrap(&path).unwrap(), made);
        std::fs::write(&path, "short\n").unwrap();
        assert!(
            bootstrap(&path)
                .unwrap_err()
                .to_string()
                .contains("at least 16")
        );
        std::fs::write(&path, "a-token-shared-by-the-cluster\n").unwrap();
        assert_eq!(bootstrap(&path).unwrap(), "a-token-shared-by-the-cluster");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_local_servers_are_looked_up() {
        assert_eq!(discover("http://10.1.2.3:7070"), None);
        assert_eq!(discover("not a url"), None);
    }
}
