//! Priority (0..=1000 and the five named classes) and quality-of-service classes derived as
//! Kubernetes derives them.

use std::fmt;
use std::str::FromStr;

use crate::resources::Resources;

/// How much an allocation matters: 0 (least) to 1000 (most). Only strictly lower priority
/// allocations can be preempted for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(u16);

impl Priority {
    /// The highest priority.
    pub const MAX: Self = Self(1000);
    /// The default priority, class `normal`.
    pub const NORMAL: Self = Self(500);

    /// A priority from a number, refused outside 0..=1000.
    pub fn new(value: i64) -> Result<Self, PriorityError> {
        u16::try_from(value)
            .ok()
            .filter(|v| *v <= 1000)
            .map(Self)
            .ok_or(PriorityError::OutOfRange(value))
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::NORMAL
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a priority was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriorityError {
    /// A number outside 0..=1000.
    #[error("{0} is out of range 0..=1000")]
    OutOfRange(i64),
    /// A class name that is not one of the five.
    #[error("unknown priority class {0:?} (expected background, low, normal, high or critical)")]
    UnknownClass(String),
}

/// The five named priority classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriorityClass {
    /// 100: batch work that may wait and be preempted by anything.
    Background,
    /// 300.
    Low,
    /// 500, the default.
    Normal,
    /// 700.
    High,
    /// 900: the fleet's essential agents.
    Critical,
}

impl PriorityClass {
    /// Every class, lowest first.
    pub const ALL: [Self; 5] = [
        Self::Background,
        Self::Low,
        Self::Normal,
        Self::High,
        Self::Critical,
    ];

    /// The priority this class stands for.
    pub fn priority(self) -> Priority {
        Priority(match self {
            Self::Background => 100,
            Self::Low => 300,
            Self::Normal => 500,
            Self::High => 700,
            Self::Critical => 900,
        })
    }

    /// The class's name as written in requests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Background => "background",
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl FromStr for PriorityClass {
    type Err = PriorityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| PriorityError::UnknownClass(s.to_owned()))
    }
}

/// Quality-of-service class, derived from requests and limits as Kubernetes derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// Limits equal to requests: evicted last.
    Guaranteed,
    /// Requests below limits, or no limits: may burst, evicted when over request.
    Burstable,
    /// No requests at all: evicted first.
    BestEffort,
}

impl Qos {
    /// Guaranteed when `limits` equal `resources`, best-effort when `resources` is empty
    /// (and no limits are set), burstable otherwise.
    pub fn derive(resources: &Resources, limits: Option<&Resources>) -> Self {
        match limits {
            _ if resources.is_empty() && limits.is_none_or(Resources::is_empty) => Self::BestEffort,
            Some(l) if l == resources => Self::Guaranteed,
            _ if resources.is_empty() => Self::BestEffort,
            _ => Self::Burstable,
        }
    }

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "best-effort",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_bounded_and_classes_named() {
        assert_eq!(Priority::new(0).unwrap().get(), 0);
        assert_eq!(Priority::new(1000).unwrap(), Priority::MAX);
        assert_eq!(
            Priority::new(1001).unwrap_err().to_string(),
            "1001 is out of range 0..=1000"
        );
        assert!(Priority::new(-1).is_err());
        assert_eq!(
            "high".parse::<PriorityClass>().unwrap().priority().get(),
            700
        );
        assert!("urgent".parse::<PriorityClass>().is_err());
        let values: Vec<_> = PriorityClass::ALL.iter().map(|c| c.priority()).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn qos_follows_kubernetes() {
        let r = Resources::new(500, 1 << 28);
        let bigger = Resources::new(1000, 1 << 28);
        assert_eq!(Qos::derive(&r, Some(&r)), Qos::Guaranteed);
        assert_eq!(Qos::derive(&r, None), Qos::Burstable);
        assert_eq!(Qos::derive(&r, Some(&bigger)), Qos::Burstable);
        assert_eq!(Qos::derive(&Resources::default(), None), Qos::BestEffort);
        assert_eq!(
            Qos::derive(&Resources::default(), Some(&bigger)),
            Qos::BestEffort
        );
    }
}
