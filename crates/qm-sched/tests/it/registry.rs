//! The registry's and profiles' rules: duplicate names, unknown plugins, plugins at the wrong
//! extension point, and every preset building.

use qm_sched::{Framework, Profile, Registry, RegistryError, preset, presets};

#[test]
fn every_preset_builds_and_names_are_unique() {
    let names: Vec<_> = presets().iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "priority",
            "fair-share",
            "best-fit",
            "first-fit",
            "spread",
            "learned"
        ]
    );
    for p in presets() {
        Framework::preset(p.name).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    let err = preset("learned-by-magic").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown strategy \"learned-by-magic\" (known: priority, fair-share, best-fit, first-fit, spread, learned)"
    );
}

#[test]
fn a_duplicate_plugin_name_is_an_error() {
    let mut registry = Registry::builtin();
    let err = registry
        .register("fits", || Box::new(qm_sched::plugins::Fits))
        .unwrap_err();
    assert_eq!(err, RegistryError::Duplicate("fits".to_owned()));
}

#[test]
fn profiles_are_checked_against_the_registry() {
    let registry = Registry::builtin();
    let base = Profile::from(preset("priority").unwrap());
    let mut p = base.clone();
    p.filters.push("no-such".to_owned());
    assert!(matches!(
        Framework::new(&registry, &p),
        Err(RegistryError::Unknown { .. })
    ));
    let mut p = base.clone();
    p.queue_order = "fits".to_owned();
    assert_eq!(
        Framework::new(&registry, &p).unwrap_err().to_string(),
        "plugin \"fits\" has no queue-order extension point"
    );
    let mut p = base.clone();
    p.filters.push("fits".to_owned());
    assert!(matches!(
        Framework::new(&registry, &p),
        Err(RegistryError::Repeated { .. })
    ));
    let mut p = base;
    p.scores = vec![("most-allocated".to_owned(), 0)];
    assert!(matches!(
        Framework::new(&registry, &p),
        Err(RegistryError::BadWeight { .. })
    ));
}
