//! Sizing at admission (the `learned` strategy): a request as written, its limits, and what
//! its template was seen to use give the size the ledger reserves. Pure arithmetic, so the
//! rules are tested here and the daemon only looks the template up.

use crate::Sizing;

/// What admission may do with a template's recommendation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmitRules {
    /// Below this confidence (0..=1) the request stays as written.
    pub min_confidence: f64,
    /// How far below the request as written the reservation may go: at least
    /// `written / max_overcommit`, so the requests as written on a node never add up to more
    /// than `max_overcommit` times its allocatable (1 = never below the request).
    pub max_overcommit: f64,
}

impl Default for AdmitRules {
    fn default() -> Self {
        Self {
            min_confidence: 0.5,
            max_overcommit: 1.5,
        }
    }
}

/// Why a request kept its size, or what it was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admitted {
    /// Sized by the recommendation.
    Sized(Sizing),
    /// The recommendation's confidence is below the rules' minimum.
    LowConfidence,
    /// The request reserves exactly its limits (guaranteed): it asked for a guarantee, and
    /// keeps it.
    Guaranteed,
    /// The request names neither cpu nor memory (best effort): nothing to size.
    BestEffort,
}

/// The size to reserve for a request of `written` (cpu cores, memory bytes; 0 where it names
/// none) with `limits`, given its template's `recommended` size and `confidence`.
///
/// Per resource the request names: the recommendation, but at least `written /
/// max_overcommit` and never above the limit (usage cannot pass it, so reserving more is
/// waste). A resource it does not name stays unreserved. It may grow past the request as
/// written when the template uses more (up to the limit): reserving what will be used is what
/// keeps the node from overrunning.
pub fn admit(
    written: Sizing,
    limits: Option<Sizing>,
    recommended: Sizing,
    confidence: f64,
    rules: AdmitRules,
) -> Admitted {
    if written.cpu <= 0.0 && written.memory <= 0.0 {
        return Admitted::BestEffort;
    }
    if let Some(l) = limits
        && l.cpu == written.cpu
        && l.memory == written.memory
    {
        return Admitted::Guaranteed;
    }
    if confidence.is_nan() || confidence < rules.min_confidence {
        return Admitted::LowConfidence;
    }
    let overcommit = rules.max_overcommit.max(1.0);
    let one = |written: f64, limit: Option<f64>, rec: f64| {
        if written <= 0.0 || !rec.is_finite() {
            return written;
        }
        let ceiling = limit.filter(|l| *l > 0.0).unwrap_or(f64::INFINITY);
        rec.max(written / overcommit).min(ceiling.max(written))
    };
    Admitted::Sized(Sizing {
        cpu: one(written.cpu, limits.map(|l| l.cpu), recommended.cpu),
        memory: one(written.memory, limits.map(|l| l.memory), recommended.memory),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: f64 = 1024.0 * 1024.0;
    const GI: f64 = 1024.0 * MI;

    fn rules() -> AdmitRules {
        AdmitRules {
            min_confidence: 0.5,
            max_overcommit: 2.0,
        }
    }

    fn sized(a: Admitted) -> Sizing {
        match a {
            Admitted::Sized(s) => s,
            other => panic!("not sized: {other:?}"),
        }
    }

    #[test]
    fn a_request_shrinks_to_what_its_template_uses_but_not_past_the_overcommit_bound() {
        let written = Sizing {
            cpu: 1.0,
            memory: GI,
        };
        let s = sized(admit(
            written,
            None,
            Sizing {
                cpu: 0.6,
                memory: 700.0 * MI,
            },
            0.9,
            rules(),
        ));
        assert_eq!(s.cpu, 0.6);
        assert_eq!(s.memory, 700.0 * MI);
        // a template using a tenth: held at half (max_overcommit 2)
        let s = sized(admit(
            written,
            None,
            Sizing {
                cpu: 0.1,
                memory: 100.0 * MI,
            },
            0.9,
            rules(),
        ));
        assert_eq!(s.cpu, 0.5);
        assert_eq!(s.memory, 512.0 * MI);
    }

    #[test]
    fn a_request_grows_to_what_its_template_uses_up_to_its_limit() {
        let written = Sizing {
            cpu: 0.5,
            memory: 256.0 * MI,
        };
        let limits = Some(Sizing {
            cpu: 2.0,
            memory: 512.0 * MI,
        });
        let rec = Sizing {
            cpu: 1.0,
            memory: GI,
        };
        let s = sized(admit(written, limits, rec, 1.0, rules()));
        assert_eq!(s.cpu, 1.0);
        assert_eq!(s.memory, 512.0 * MI, "never above the limit");
        let s = sized(admit(written, None, rec, 1.0, rules()));
        assert_eq!(s.memory, GI, "without a limit, what it uses");
    }

    #[test]
    fn low_confidence_guaranteed_and_best_effort_requests_keep_their_size() {
        let written = Sizing {
            cpu: 1.0,
            memory: GI,
        };
        let rec = Sizing {
            cpu: 0.1,
            memory: 100.0 * MI,
        };
        assert_eq!(
            admit(written, None, rec, 0.49, rules()),
            Admitted::LowConfidence
        );
        assert_eq!(
            admit(written, None, rec, f64::NAN, rules()),
            Admitted::LowConfidence
        );
        assert_eq!(
            admit(written, Some(written), rec, 1.0, rules()),
            Admitted::Guaranteed
        );
        let none = Sizing {
            cpu: 0.0,
            memory: 0.0,
        };
        assert_eq!(admit(none, None, rec, 1.0, rules()), Admitted::BestEffort);
    }

    #[test]
    fn a_resource_the_request_does_not_name_stays_unreserved() {
        let written = Sizing {
            cpu: 0.0,
            memory: GI,
        };
        let s = sized(admit(
            written,
            None,
            Sizing {
                cpu: 3.0,
                memory: 600.0 * MI,
            },
            1.0,
            rules(),
        ));
        assert_eq!(s.cpu, 0.0);
        assert_eq!(s.memory, 600.0 * MI);
    }

    #[test]
    fn an_overcommit_of_one_never_goes_below_the_request() {
        let written = Sizing {
            cpu: 1.0,
            memory: GI,
        };
        let r = AdmitRules {
            min_confidence: 0.0,
            max_overcommit: 1.0,
        };
        let s = sized(admit(
            written,
            None,
            Sizing {
                cpu: 0.1,
                memory: 10.0 * MI,
            },
            0.0,
            r,
        ));
        assert_eq!(s, written);
    }
}
