//! Resource vectors: how much cpu, memory, ephemeral storage, gpu and extended resources a
//! request asks for or a node offers, with saturating arithmetic and the `fits` and
//! `dominant_share` helpers the strategies lean on. Extended resource names are interned to small
//! ids by a [`ResourceCatalog`], so a vector is a few machine words and never hashes a string.

use std::fmt;

use crate::quantity::{self, QuantityError, Unit};

/// How many extended resources (beyond cpu, memory, ephemeral-storage and gpu) one catalog holds.
pub const MAX_EXTENDED: usize = 12;

const N_BASE: usize = 4;

/// A resource kind: one of the four standard ones or an interned extended name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId(u8);

impl ResourceId {
    /// Cpu, in millicores.
    pub const CPU: Self = Self(0);
    /// Memory, in bytes.
    pub const MEMORY: Self = Self(1);
    /// Ephemeral (scratch disk) storage, in bytes.
    pub const EPHEMERAL_STORAGE: Self = Self(2);
    /// Whole GPUs, a count.
    pub const GPU: Self = Self(3);
    const BASE_NAMES: [&'static str; N_BASE] = ["cpu", "memory", "ephemeral-storage", "gpu"];

    /// The dense index of this resource, `0..4 + MAX_EXTENDED`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The unit values of this resource are counted in.
    pub fn unit(self) -> Unit {
        match self.0 {
            0 => Unit::Millicores,
            1 | 2 => Unit::Bytes,
            _ => Unit::Count,
        }
    }
}

/// Why a resource name or quantity was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The name is neither standard nor declared as an extended resource.
    #[error("{field}: unknown resource {name:?}")]
    Unknown { field: String, name: String },
    /// The quantity text could not be parsed.
    #[error("{field}: {source}")]
    Quantity {
        field: String,
        source: QuantityError,
    },
    /// The catalog already holds [`MAX_EXTENDED`] extended resources.
    #[error(
        "too many extended resources: at most {MAX_EXTENDED} may be declared, {name:?} is one more"
    )]
    TooMany { name: String },
    /// An extended resource name that is not of the form `[prefix/]name`.
    #[error(
        "invalid extended resource name {name:?}: use letters, digits, '-', '_', '.' and one optional '/'"
    )]
    BadName { name: String },
}

/// The set of resource names a cluster knows: the four standard ones plus declared extended ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceCatalog {
    extended: Vec<Box<str>>,
}

impl ResourceCatalog {
    /// Finds a resource by name.
    pub fn lookup(&self, name: &str) -> Option<ResourceId> {
        if let Some(i) = ResourceId::BASE_NAMES.iter().position(|n| *n == name) {
            return u8::try_from(i).ok().map(ResourceId);
        }
        let i = self.extended.iter().position(|n| &**n == name)?;
        u8::try_from(N_BASE + i).ok().map(ResourceId)
    }

    /// Declares an extended resource (a count), or returns the id it already has.
    pub fn intern(&mut self, name: &str) -> Result<ResourceId, ResourceError> {
        if let Some(id) = self.lookup(name) {
            return Ok(id);
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.matches('/').count() <= 1
            && !name.starts_with('/')
            && !name.ends_with('/')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !valid {
            return Err(ResourceError::BadName {
                name: name.to_owned(),
            });
        }
        if self.extended.len() >= MAX_EXTENDED {
            return Err(ResourceError::TooMany {
                name: name.to_owned(),
            });
        }
        self.extended.push(name.into());
        u8::try_from(N_BASE + self.extended.len() - 1)
            .map(ResourceId)
            .map_err(|_| ResourceError::TooMany {
                name: name.to_owned(),
            })
    }

    /// The name of a resource id issued by this catalog.
    pub fn name(&self, id: ResourceId) -> &str {
        let i = id.index();
        if i < N_BASE {
            ResourceId::BASE_NAMES[i]
        } else {
            self.extended.get(i - N_BASE).map_or("?", |n| n)
        }
    }

    /// Every resource this catalog knows, standard ones first.
    pub fn ids(&self) -> impl Iterator<Item = ResourceId> + '_ {
        (0..N_BASE + self.extended.len()).filter_map(|i| u8::try_from(i).ok().map(ResourceId))
    }

    /// Parses `{name: quantity}` pairs into a vector; `field` prefixes error messages
    /// (`resources.memory: "-1Gi" is negative`). A name given twice keeps the last value.
    pub fn parse<'a>(
        &self,
        field: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Resources, ResourceError> {
        let mut out = Resources::default();
        for (name, text) in entries {
            let id = self.lookup(name).ok_or_else(|| ResourceError::Unknown {
                field: format!("{field}.{name}"),
                name: name.to_owned(),
            })?;
            let value =
                quantity::parse(id.unit(), text).map_err(|source| ResourceError::Quantity {
                    field: format!("{field}.{name}"),
                    source,
                })?;
            out.set(id, value);
        }
        Ok(out)
    }

    /// Canonical text of a vector: `cpu=500m,memory=256Mi` (zero entries left out, `0` if empty).
    pub fn display<'a>(&'a self, resources: &'a Resources) -> impl fmt::Display + 'a {
        DisplayResources {
            catalog: self,
            resources,
        }
    }
}

struct DisplayResources<'a> {
    catalog: &'a ResourceCatalog,
    resources: &'a Resources,
}

impl fmt::Display for DisplayResources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (id, value) in self.resources.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match self.catalog.name(id) {
                "?" => write!(f, "resource#{}=", id.index())?,
                name => write!(f, "{name}=")?,
            }
            quantity::write(id.unit(), value, f)?;
        }
        if first {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// An amount of every resource kind, in base units (millicores, bytes, counts).
///
/// The four standard resources sit inline; extended ones live in one boxed array that exists only
/// when some extended amount is non-zero, so the common vector is 40 bytes and allocation-free.
#[derive(Clone, Default)]
pub struct Resources {
    base: [u64; N_BASE],
    ext: Option<Box<[u64; MAX_EXTENDED]>>,
}

impl Resources {
    /// A vector of cpu (millicores) and memory (bytes).
    pub fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self {
            base: [cpu_millis, memory_bytes, 0, 0],
            ext: None,
        }
    }

    /// This vector with `id` set to `value`.
    #[must_use]
    pub fn with(mut self, id: ResourceId, value: u64) -> Self {
        self.set(id, value);
        self
    }

    /// The amount of one resource.
    pub fn get(&self, id: ResourceId) -> u64 {
        let i = id.index();
        if i < N_BASE {
            self.base[i]
        } else {
            self.ext
                .as_ref()
                .and_then(|e| e.get(i - N_BASE).copied())
                .unwrap_or(0)
        }
    }

    /// Sets the amount of one resource.
    pub fn set(&mut self, id: ResourceId, value: u64) {
        let i = id.index();
        if i < N_BASE {
            self.base[i] = value;
        } else if let Some(slot) = self.ext_mut(value != 0).and_then(|e| e.get_mut(i - N_BASE)) {
            *slot = value;
            self.normalize();
        }
    }

    /// Cpu in millicores.
    pub fn cpu(&self) -> u64 {
        self.base[0]
    }

    /// Memory in bytes.
    pub fn memory(&self) -> u64 {
        self.base[1]
    }

    /// True when every amount is zero.
    pub fn is_empty(&self) -> bool {
        self.base == [0; N_BASE] && self.ext.is_none()
    }

    /// The non-zero entries, standard resources first.
    pub fn iter(&self) -> impl Iterator<Item = (ResourceId, u64)> + '_ {
        let ext = self.ext.as_deref().map_or(&[][..], |e| &e[..]);
        self.base
            .iter()
            .chain(ext)
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .filter_map(|(i, v)| u8::try_from(i).ok().map(|i| (ResourceId(i), *v)))
    }

    /// True when every amount of `self` is at most the same amount of `within`.
    #[inline]
    pub fn fits(&self, within: &Self) -> bool {
        let base = self.base[0] <= within.base[0]
            && self.base[1] <= within.base[1]
            && self.base[2] <= within.base[2]
            && self.base[3] <= within.base[3];
        base && match (&self.ext, &within.ext) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.iter().zip(b.iter()).all(|(x, y)| x <= y),
        }
    }

    /// True when `self` fits in what `used` leaves of `total`: `self + used <= total` per
    /// resource, computed without overflow or allocation (the placement hot path).
    #[inline]
    pub fn fits_beside(&self, used: &Self, total: &Self) -> bool {
        let base = (0..N_BASE).all(|i| self.base[i] <= total.base[i].saturating_sub(used.base[i]));
        base && match &self.ext {
            None => true,
            Some(e) => {
                let zeros = [0; MAX_EXTENDED];
                let u = used.ext.as_deref().unwrap_or(&zeros);
                let t = total.ext.as_deref().unwrap_or(&zeros);
                (0..MAX_EXTENDED).all(|i| e[i] <= t[i].saturating_sub(u[i]))
            }
        }
    }

    /// True when `self + used` stays within `cap` on every resource `cap` names (a non-zero
    /// amount); resources `cap` leaves at zero are not capped. Pool limits work this way.
    pub fn fits_under_cap(&self, used: &Self, cap: &Self) -> bool {
        cap.iter()
            .all(|(r, c)| self.get(r).saturating_add(used.get(r)) <= c)
    }

    /// How far `self + used` goes over `cap` on the resources `cap` names.
    #[must_use]
    pub fn over_cap(&self, used: &Self, cap: &Self) -> Self {
        let mut out = Self::default();
        for (r, c) in cap.iter() {
            let over = self.get(r).saturating_add(used.get(r)).saturating_sub(c);
            if over > 0 {
                out.set(r, over);
            }
        }
        out
    }

    /// True when `self` (what a pool holds) is within `guaranteed`: on the resources the
    /// guarantee names, or, for an empty guarantee, only when `self` is empty too.
    pub fn within_guarantee(&self, guaranteed: &Self) -> bool {
        if guaranteed.is_empty() {
            self.is_empty()
        } else {
            Self::default().fits_under_cap(self, guaranteed)
        }
    }

    /// Combines each amount with the same amount of `other` through `f`, in place. `f(a, 0)`
    /// must be `a`, so extended amounts are touched only when `other` has some.
    #[inline]
    fn combine(&mut self, other: &Self, f: impl Fn(u64, u64) -> u64) {
        for (a, b) in self.base.iter_mut().zip(other.base) {
            *a = f(*a, b);
        }
        if let Some(b) = &other.ext {
            let a = self.ext.get_or_insert_with(|| Box::new([0; MAX_EXTENDED]));
            a.iter_mut().zip(b.iter()).for_each(|(a, b)| *a = f(*a, *b));
            self.normalize();
        }
    }

    /// Adds `other` in place, saturating at `u64::MAX`.
    #[inline]
    pub fn add(&mut self, other: &Self) {
        self.combine(other, u64::saturating_add);
    }

    /// Subtracts `other` in place, saturating at zero.
    #[inline]
    pub fn sub(&mut self, other: &Self) {
        self.combine(other, u64::saturating_sub);
    }

    /// Raises each amount to at least the same amount of `other`.
    pub fn max_with(&mut self, other: &Self) {
        self.combine(other, u64::max);
    }

    /// `self + other`, saturating.
    #[must_use]
    pub fn saturating_add(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.add(other);
        out
    }

    /// `self - other`, each amount floored at zero.
    #[must_use]
    pub fn saturating_sub(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.sub(other);
        out
    }

    /// What `self` lacks to cover `need`: `need - self` floored at zero, per resource.
    #[must_use]
    pub fn shortfall_for(&self, need: &Self) -> Self {
        need.saturating_sub(self)
    }

    /// The largest fraction of `total` this vector takes over the resources `total` has
    /// (Ghodsi et al.'s dominant share). A resource `total` lacks but `self` uses counts as 1.
    pub fn dominant_share(&self, total: &Self) -> f64 {
        let mut share: f64 = 0.0;
        for i in 0..N_BASE {
            share = share.max(ratio(self.base[i], total.base[i]));
        }
        if let Some(e) = &self.ext {
            let zeros = [0; MAX_EXTENDED];
            let t = total.ext.as_deref().unwrap_or(&zeros);
            for (a, b) in e.iter().zip(t.iter()) {
                share = share.max(ratio(*a, *b));
            }
        }
        share
    }

    fn ext_mut(&mut self, create: bool) -> Option<&mut [u64; MAX_EXTENDED]> {
        if self.ext.is_none() && create {
            self.ext = Some(Box::new([0; MAX_EXTENDED]));
        }
        self.ext.as_deref_mut()
    }

    fn normalize(&mut self) {
        if self.ext.as_ref().is_some_and(|e| e.iter().all(|v| *v == 0)) {
            self.ext = None;
        }
    }
}

fn ratio(used: u64, total: u64) -> f64 {
    match (used, total) {
        (0, _) => 0.0,
        (_, 0) => 1.0,
        #[allow(clippy::cast_precision_loss)]
        (u, t) => u as f64 / t as f64,
    }
}

impl PartialEq for Resources {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.ext == other.ext
    }
}

impl Eq for Resources {}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ResourceCatalog::default().display(self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_use_canonical_quantities() {
        let mut catalog = ResourceCatalog::default();
        catalog.intern("nvidia.com/gpu").unwrap();
        let r = catalog
            .parse(
                "resources",
                [
                    ("cpu", "1.5"),
                    ("memory", "268435456"),
                    ("nvidia.com/gpu", "2"),
                ],
            )
            .unwrap();
        assert_eq!(r.cpu(), 1500);
        assert_eq!(
            catalog.display(&r).to_string(),
            "cpu=1500m,memory=256Mi,nvidia.com/gpu=2"
        );
        assert_eq!(catalog.display(&Resources::default()).to_string(), "0");
    }

    #[test]
    fn errors_name_the_field() {
        let catalog = ResourceCatalog::default();
        let err = catalog
            .parse("resources", [("memory", "-1Gi")])
            .unwrap_err();
        assert!(err.to_string().starts_with("resources.memory: "), "{err}");
        let err = catalog.parse("resources", [("disk", "1")]).unwrap_err();
        assert_eq!(err.to_string(), "resources.disk: unknown resource \"disk\"");
    }

    #[test]
    fn catalog_caps_and_checks_extended_names() {
        let mut catalog = ResourceCatalog::default();
        assert_eq!(catalog.intern("gpu").unwrap(), ResourceId::GPU);
        assert!(catalog.intern("bad name").is_err());
        assert!(catalog.intern("/x").is_err());
        for i in 0..MAX_EXTENDED {
            catalog.intern(&format!("example.com/r{i}")).unwrap();
        }
        assert!(matches!(
            catalog.intern("one-more"),
            Err(ResourceError::TooMany { .. })
        ));
        assert_eq!(catalog.intern("example.com/r3").unwrap().index(), 7);
    }

    #[test]
    fn arithmetic_saturates_and_extended_amounts_compare() {
        let ext = ResourceId(5);
        let a = Resources::new(u64::MAX - 1, 10).with(ext, 3);
        let b = Resources::new(5, 20);
        let sum = a.saturating_add(&b);
        assert_eq!(sum.cpu(), u64::MAX);
        assert_eq!(sum.get(ext), 3);
        let diff = b.saturating_sub(&a);
        assert_eq!((diff.cpu(), diff.memory(), diff.get(ext)), (0, 10, 0));
        assert!(b.fits(&sum));
        assert!(
            !a.fits(&b),
            "an extended amount the other lacks does not fit"
        );
        let mut c = a.clone();
        c.sub(&a);
        assert!(c.is_empty(), "zeroed extended amounts leave no box behind");
        assert_eq!(c, Resources::default());
    }

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let total = Resources::new(9000, 18 << 30);
        let a = Resources::new(1000, 4 << 30);
        let b = Resources::new(3000, 1 << 30);
        assert!((a.dominant_share(&total) - 4.0 / 18.0).abs() < 1e-12);
        assert!((b.dominant_share(&total) - 3.0 / 9.0).abs() < 1e-12);
        assert!(
            (Resources::new(0, 0)
                .with(ResourceId::GPU, 1)
                .dominant_share(&total)
                - 1.0)
                .abs()
                < 1e-12
        );
    }
}
