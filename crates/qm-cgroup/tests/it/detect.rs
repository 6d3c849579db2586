//! `detect` on fake trees: v2 where the root lists the memory controller, v1 where a `memory`
//! hierarchy is mounted, hybrid where a cgroup2 `unified` mount comes with it, `Unsupported`
//! otherwise; an invalid parent is refused before anything is read.

use qm_cgroup::{CgroupError, DetectError, Kind, detect};

use crate::fake::{v1_tree, v2_tree};
use crate::support::FakeTree;

#[test]
fn detect_picks_the_layout() {
    let kind = |t: &FakeTree| detect(t.path(), "qm").map(|d| d.kind());
    let v2 = v2_tree("cpu memory pids io\n");
    assert_eq!(kind(&v2).unwrap(), Kind::V2);

    let v1 = v1_tree();
    assert_eq!(kind(&v1).unwrap(), Kind::V1);
    v1.file("unified/cgroup.procs", "");
    assert_eq!(kind(&v1).unwrap(), Kind::Hybrid);

    let empty = FakeTree::new("empty");
    let err = kind(&empty).unwrap_err();
    assert!(matches!(err, DetectError::Unsupported { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "no usable cgroup hierarchy under {}",
            empty.path().display()
        )
    );

    let no_memory = v2_tree("cpu pids\n");
    assert!(matches!(
        kind(&no_memory),
        Err(DetectError::Unsupported { .. })
    ));
    let missing = detect(&empty.path().join("nowhere"), "qm").map(|d| d.kind());
    assert!(matches!(missing, Err(DetectError::Unsupported { .. })));

    let bad = detect(v2.path(), "../etc").map(|d| d.kind()).unwrap_err();
    assert!(
        matches!(bad, DetectError::Cgroup(CgroupError::InvalidName { .. })),
        "{bad}"
    );
}
