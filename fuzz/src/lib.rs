//! Shared helpers of readout's fuzz targets: turning fuzzer bytes into sizes, values
//! and index arrays, with the special cases the layers must survive (absurd sizes,
//! negative and huge indices, NaN, ±inf, huge and subnormal values).
//!
//! Every draw is total: when the bytes run out, draws return the smallest choice, so a
//! target never fails for lack of input.

use arbitrary::Unstructured;

/// Sizes at or above this are "absurd": the layers must refuse them with a typed error
/// before allocating (their caps are far below), never try to allocate them.
pub const ABSURD: usize = 1 << 40;

/// Fuzzer bytes, read as a sequence of choices.
pub struct Draw<'a> {
    u: Unstructured<'a>,
}

impl<'a> Draw<'a> {
    /// Draws from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Draw {
            u: Unstructured::new(data),
        }
    }

    /// Whether the bytes are used up.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// A byte (0 when the input is used up).
    pub fn byte(&mut self) -> u8 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// A `u64` (0 when the input is used up).
    pub fn u64(&mut self) -> u64 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// `true` with probability about `num / 256`.
    pub fn chance(&mut self, num: u8) -> bool {
        self.byte() < num
    }

    /// A boolean.
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// An integer in `lo ..= hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        self.u.int_in_range(lo..=hi).unwrap_or(lo)
    }

    /// One of `items` (the first when the input is used up).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.int(0, items.len() - 1)]
    }

    /// A size: usually in `0 ..= max`, sometimes absurd (`≥ ABSURD`, up to
    /// `usize::MAX`). Returns the size and whether it is absurd.
    pub fn size(&mut self, max: usize) -> (usize, bool) {
        if self.chance(12) {
            let v = match self.int(0, 4) {
                0 => usize::MAX,
                1 => usize::MAX / 2 + 1,
                2 => ABSURD,
                3 => 1 << 48,
                _ => (self.u64() as usize).max(ABSURD),
            };
            (v, true)
        } else {
            (self.int(0, max), false)
        }
    }

    /// A value in `[-r, r]` on a grid of 65536 points.
    pub fn sane(&mut self, r: f32) -> f32 {
        let b: u16 = self.u.arbitrary().unwrap_or(0x8000);
        (f32::from(b) / 32767.5 - 1.0) * r
    }

    /// The same, in `f64`.
    pub fn sane64(&mut self, r: f64) -> f64 {
        let b: u16 = self.u.arbitrary().unwrap_or(0x8000);
        (f64::from(b) / 32767.5 - 1.0) * r
    }

    /// Any `f32`: mostly moderate values, often the special ones (NaN, ±inf, ±0,
    /// ±f32::MAX, huge, subnormal), sometimes arbitrary bits.
    pub fn value(&mut self) -> f32 {
        match self.byte() {
            0..=159 => self.sane(4.0),
            160..=179 => self.pick(&[
                f32::NAN,
                -f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                f32::MAX,
                f32::MIN,
                1e30,
                -1e30,
                1e-40,
                -1e-40,
                f32::MIN_POSITIVE,
                1e-45,
                88.8,
                -104.0,
                20.0,
            ]),
            180..=219 => self.sane(1e3),
            _ => f32::from_bits(self.u.arbitrary().unwrap_or(0)),
        }
    }

    /// An index entry: usually in `0 .. bound`, sometimes negative, `bound` or beyond,
    /// or an extreme `i64`.
    pub fn index_entry(&mut self, bound: usize) -> i64 {
        match self.byte() {
            0..=229 => self.int(0, bound.saturating_sub(1)) as i64,
            230..=236 => -(self.int(1, 3) as i64),
            237..=243 => i64::try_from(bound)
                .unwrap_or(i64::MAX)
                .saturating_add(self.int(0, 2) as i64),
            244..=249 => self.pick(&[i64::MIN, i64::MAX, i64::MAX - 1, 1 << 40]),
            _ => {
                // Anything, but never a merely large count: a set or graph id in
                // 64 .. 2⁴⁰ would be legitimate and only slow (millions of empty sets),
                // so it is moved up into the absurd range the layers must refuse.
                let v: i64 = self.u.arbitrary().unwrap_or(0);
                if (64..ABSURD as i64).contains(&v) {
                    v | ABSURD as i64
                } else {
                    v
                }
            }
        }
    }
}

/// Whether every value is finite.
pub fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}
