//! Names: [`GroupName`], a validated group name (the agent's id), and [`Parent`], the validated
//! path of the directory the groups live in (`qm`, or nested like `qm.slice/agents`). Both are
//! checked once, so no path built from them climbs out of the mount.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::CgroupError;

/// The longest name accepted.
const MAX_LEN: usize = 128;

/// A group's name: 1 to 128 of `[A-Za-z0-9._-]`, not `.`, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

impl GroupName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, CgroupError> {
        check(name)?;
        Ok(GroupName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for GroupName {
    type Err = CgroupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for GroupName {
    type Error = CgroupError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for GroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parent directory of the groups, relative to the mount: one or more valid names joined
/// by `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parent(PathBuf);

impl Parent {
    pub(crate) fn new(parent: &str) -> Result<Self, CgroupError> {
        if parent.is_empty() {
            return Err(invalid(parent, "the parent is empty"));
        }
        let mut path = PathBuf::new();
        for part in parent.split('/') {
            check(part)
                .map_err(|_| invalid(parent, "each part of the parent must be a valid name"))?;
            path.push(part);
        }
        Ok(Parent(path))
    }

    /// The parent, relative to the mount.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// `name`'s group, relative to the mount.
    pub(crate) fn group(&self, name: &GroupName) -> PathBuf {
        self.0.join(name.as_str())
    }
}

fn check(name: &str) -> Result<(), CgroupError> {
    if name.is_empty() || name.len() > MAX_LEN {
        return Err(invalid(name, "the length must be 1 to 128"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let reason = if c == '/' {
            "'/' is not allowed"
        } else {
            "only letters, digits, '.', '_' and '-' are allowed"
        };
        return Err(invalid(name, reason));
    }
    if name == "." || name.contains("..") {
        return Err(invalid(name, "'.' and '..' are not allowed"));
    }
    Ok(())
}

fn invalid(name: &str, reason: &'static str) -> CgroupError {
    CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["coder-1", "a", "A.b_c-9", &"x".repeat(128), ".hidden"] {
            assert_eq!(GroupName::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            "a/b",
            "a b",
            "ü",
            "a\n",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(GroupName::new(bad), Err(CgroupError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            GroupName::new("a/b").unwrap_err().to_string(),
            r#"invalid cgroup name "a/b": '/' is not allowed"#
        );
        assert_eq!(
            "coder-1".parse::<GroupName>().unwrap().to_string(),
            "coder-1"
        );
    }

    #[test]
    fn parents_are_paths_of_names() {
        let p = Parent::new("qm.slice/agents").unwrap();
        let name = GroupName::new("c1").unwrap();
        assert_eq!(p.group(&name), Path::new("qm.slice/agents/c1"));
        assert_eq!(Parent::new("qm").unwrap().path(), Path::new("qm"));
        for bad in ["", "/qm", "qm/", "qm//a", "../qm", "qm/.."] {
            assert!(Parent::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
