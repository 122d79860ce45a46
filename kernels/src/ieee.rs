//! Floats stored as their bit patterns, so that the IRs holding them are `Eq + Hash` and
//! compare by structure (Cranelift's `Ieee32` is the model).
//!
//! Two constants are the same when their bits are: `0.0` and `-0.0` differ, and a NaN equals
//! itself. That is what structural equality needs: CSE must not merge `-0.0` into `0.0`, and
//! a kernel built twice from the same graph must compare equal to itself.

use std::fmt;

/// An f32 stored as its bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ieee32(u32);

/// An f64 stored as its bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ieee64(u64);

impl Ieee32 {
    /// The constant `v`.
    pub const fn new(v: f32) -> Ieee32 {
        Ieee32(v.to_bits())
    }

    /// Its value.
    pub const fn value(self) -> f32 {
        f32::from_bits(self.0)
    }
}

impl Ieee64 {
    /// The constant `v`.
    pub const fn new(v: f64) -> Ieee64 {
        Ieee64(v.to_bits())
    }

    /// Its value.
    pub const fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl From<f32> for Ieee32 {
    fn from(v: f32) -> Ieee32 {
        Ieee32::new(v)
    }
}

impl From<f64> for Ieee64 {
    fn from(v: f64) -> Ieee64 {
        Ieee64::new(v)
    }
}

// Debug prints the value, as the plain float did: dumps and messages stay as they were.
impl fmt::Debug for Ieee32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value(), f)
    }
}

impl fmt::Debug for Ieee64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_is_by_bits() {
        assert_eq!(Ieee32::new(1.5).value(), 1.5);
        assert_ne!(Ieee32::new(0.0), Ieee32::new(-0.0));
        assert_eq!(Ieee32::new(f32::NAN), Ieee32::new(f32::NAN));
        assert_eq!(Ieee64::new(-2.25).value(), -2.25);
        assert_ne!(Ieee64::new(0.0), Ieee64::new(-0.0));
        assert_eq!(format!("{:?}", Ieee64::new(1.0)), "1.0");
        assert_eq!(format!("{:?}", Ieee32::new(f32::NEG_INFINITY)), "-inf");
    }
}
