//! Test-only helpers shared by the modules' tests: a deterministic noise source.

/// Deterministic xorshift64 with a gaussian-ish (sum of four uniforms) draw.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly standard normal, bounded by ±√12.
    pub(crate) fn gaussish(&mut self) -> f64 {
        let sum: f64 = (0..4).map(|_| self.uniform()).sum();
        (sum - 2.0) * 3f64.sqrt()
    }
}
