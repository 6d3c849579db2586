//! The explicit plugin registry: a literal list of built-in plugins by name, to which callers
//! may add their own. A name registered twice is an error.

use std::fmt;

use crate::plugin::Plugin;
use crate::plugins;

/// Makes a fresh plugin instance.
pub type Factory = fn() -> Box<dyn Plugin>;

/// Why a registry or profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two plugins under one name.
    #[error("plugin {0:?} is registered twice")]
    Duplicate(String),
    /// A profile names a plugin no one registered.
    #[error("unknown plugin {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    /// A profile puts a plugin at an extension point it does not implement.
    #[error("plugin {name:?} has no {point} extension point")]
    WrongPoint { name: String, point: &'static str },
    /// A profile lists a plugin twice at one extension point.
    #[error("plugin {name:?} is listed twice at {point}")]
    Repeated { name: String, point: &'static str },
    /// A profile names no strategy preset of that name.
    #[error("unknown strategy {name:?} (known: {known})")]
    UnknownStrategy { name: String, known: String },
    /// A score weight of zero or above 100.
    #[error("score weight of {name:?} must be 1..=100, got {weight}")]
    BadWeight { name: String, weight: u32 },
}

/// Plugins by name.
#[derive(Clone)]
pub struct Registry {
    entries: Vec<(&'static str, Factory)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Registry {
    /// The built-in plugins.
    pub fn builtin() -> Self {
        let entries: Vec<(&'static str, Factory)> = vec![
            ("priority-fifo", || Box::new(plugins::PriorityFifo)),
            ("drf", || Box::new(plugins::DominantShare)),
            ("node-selector", || Box::new(plugins::NodeSelector)),
            ("node-hold", || Box::new(plugins::NodeHold)),
            ("fits", || Box::new(plugins::Fits)),
            ("topology", || Box::new(plugins::TopologyRules)),
            ("most-allocated", || Box::new(plugins::MostAllocated)),
            ("least-allocated", || Box::new(plugins::LeastAllocated)),
            ("agent-spread", || Box::<plugins::AgentSpread>::default()),
            ("priority-preemption", || {
                Box::new(plugins::PriorityPreemption)
            }),
            ("reclaim", || Box::new(plugins::Reclaim)),
        ];
        Self { entries }
    }

    /// Adds a plugin; refused if the name is taken.
    pub fn register(&mut self, name: &'static str, factory: Factory) -> Result<(), RegistryError> {
        if self.get(name).is_some() {
            return Err(RegistryError::Duplicate(name.to_owned()));
        }
        self.entries.push((name, factory));
        Ok(())
    }

    /// The factory registered under `name`.
    pub fn get(&self, name: &str) -> Option<Factory> {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }

    /// Every registered name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(n, _)| *n)
    }

    pub(crate) fn unknown(&self, name: &str) -> RegistryError {
        RegistryError::Unknown {
            name: name.to_owned(),
            known: self.names().collect::<Vec<_>>().join(", "),
        }
    }
}
