//! The `basic` rules' exact names: measurement name → lowest rule index.
//!
//! Measurement names are short, and the shards look one up for every line.
//! Through `HashMap<Box<[u8]>, _>` that cost ≈180 instructions (the `Hash`
//! trait writes a length prefix and the bytes into the hasher, then a
//! `memcmp` call confirms the hit). Here a name is reduced to a fingerprint
//! of two words that, with its length, holds every byte of a name of up to
//! 16 bytes; a multiply-shift of the fingerprint picks the slot, and equal
//! fingerprints are equal names. Longer names also compare their bytes.

/// A name's length and two words that hold all of its bytes when it has at
/// most 16: the first and last eight for 8..=16 bytes, the first and last
/// four for 4..=7, the first, middle and last byte for 1..=3.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Fingerprint {
    len: usize,
    a: u64,
    b: u64,
}

#[inline(always)]
fn fingerprint(name: &[u8]) -> Fingerprint {
    let n = name.len();
    let (a, b) = if n >= 8 {
        (word8(name, 0), word8(name, n - 8))
    } else if n >= 4 {
        (word4(name, 0), word4(name, n - 4))
    } else if n > 0 {
        (
            u64::from(name[0]) | u64::from(name[n / 2]) << 8,
            u64::from(name[n - 1]),
        )
    } else {
        (0, 0)
    };
    Fingerprint { len: n, a, b }
}

#[inline(always)]
fn word8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[inline(always)]
fn word4(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

/// One slot: a name's fingerprint and its rule; `len == EMPTY` when free.
#[derive(Clone, Copy, Debug)]
struct Slot {
    len: u32,
    rule: u32,
    a: u64,
    b: u64,
}

/// The `len` of a free slot (no name is that long: datagrams are < 64 KiB).
const EMPTY: u32 = u32::MAX;

const FREE: Slot = Slot {
    len: EMPTY,
    rule: 0,
    a: 0,
    b: 0,
};

/// Open addressing, linear probing, at most half full.
#[derive(Clone, Debug)]
pub(super) struct NameTable {
    /// Never empty, never more than half full: a free slot ends every probe.
    slots: Box<[Slot]>,
    /// The whole name of each slot, compared only when it is longer than 16 bytes.
    names: Box<[Box<[u8]>]>,
    /// `64 - log2(slots.len())`: the multiply-shift keeps the top bits.
    shift: u32,
    len: usize,
}

impl Default for NameTable {
    fn default() -> Self {
        NameTable::new([])
    }
}

impl NameTable {
    /// The names in rule order; the first rule naming a name wins (a later
    /// duplicate could never match).
    pub(super) fn new<'a>(names: impl IntoIterator<Item = (&'a [u8], u32)>) -> NameTable {
        let names: Vec<(&[u8], u32)> = names
            .into_iter()
            .filter(|(name, _)| name.len() < EMPTY as usize)
            .collect();
        let size = (names.len() * 2).next_power_of_two().max(2);
        let mut table = NameTable {
            slots: vec![FREE; size].into_boxed_slice(),
            names: vec![Box::default(); size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
            len: 0,
        };
        for (name, rule) in names {
            if table.get(name).is_some() {
                continue;
            }
            let f = fingerprint(name);
            let mut i = table.slot_of(&f);
            while table.slots[i].len != EMPTY {
                i = (i + 1) & (size - 1);
            }
            table.slots[i] = Slot {
                len: f.len as u32,
                rule,
                a: f.a,
                b: f.b,
            };
            table.names[i] = name.into();
            table.len += 1;
        }
        table
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn slot_of(&self, f: &Fingerprint) -> usize {
        let mixed = (f.a ^ f.b.rotate_left(29) ^ (f.len as u64).rotate_left(53))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> self.shift) as usize
    }

    /// The rule index of the first `basic` rule naming `name`.
    #[inline]
    pub(super) fn get(&self, name: &[u8]) -> Option<u32> {
        let f = fingerprint(name);
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(&f);
        loop {
            let slot = &self.slots[i & mask];
            if slot.a == f.a && slot.b == f.b && slot.len as usize == f.len {
                if f.len <= 16 || *self.names[i & mask] == *name {
                    return Some(slot.rule);
                }
            } else if slot.len == EMPTY {
                return None;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn fingerprints_of_short_names_hold_every_byte() {
        // Every name of up to 3 bytes over a few byte values: distinct names,
        // distinct fingerprints.
        let bytes = [b'a', b'b', 0, 0xff];
        let mut names = vec![vec![]];
        for len in 1..=3 {
            for i in 0..bytes.len().pow(len) {
                let mut k = i;
                names.push(
                    (0..len)
                        .map(|_| {
                            let b = bytes[k % bytes.len()];
                            k /= bytes.len();
                            b
                        })
                        .collect(),
                );
            }
        }
        let mut seen = HashMap::new();
        for name in &names {
            assert_eq!(
                seen.insert(fingerprint(name), name.clone()),
                None,
                "{name:?}"
            );
        }
    }

    #[test]
    fn first_rule_for_a_name_wins_and_long_names_compare_bytes() {
        let long_a = b"a_measurement_name_longer_than_16".as_slice();
        let long_b = b"a_measurement_XXXX_longer_than_16".as_slice();
        let t = NameTable::new([
            (b"cpu".as_slice(), 0),
            (b"mem".as_slice(), 1),
            (b"cpu".as_slice(), 2),
            (long_a, 3),
            (b"".as_slice(), 4),
        ]);
        assert_eq!(t.get(b"cpu"), Some(0));
        assert_eq!(t.get(b"mem"), Some(1));
        assert_eq!(t.get(long_a), Some(3));
        // Same length, first and last eight bytes, different middle.
        assert_eq!(fingerprint(long_a), fingerprint(long_b));
        assert_eq!(t.get(long_b), None);
        assert_eq!(t.get(b""), Some(4));
        assert_eq!(t.get(b"cpu2"), None);
        assert!(NameTable::new([]).get(b"cpu").is_none());
        assert!(NameTable::new([]).is_empty());
    }

    proptest! {
        #[test]
        fn agrees_with_a_hash_map(
            names in proptest::collection::vec(
                proptest::collection::vec(prop::sample::select(&b"ab\0\xffz"[..]), 0..20), 0..40),
            probes in proptest::collection::vec(
                proptest::collection::vec(prop::sample::select(&b"ab\0\xffz"[..]), 0..20), 0..40),
        ) {
            let mut reference: HashMap<&[u8], u32> = HashMap::new();
            for (i, name) in names.iter().enumerate() {
                reference.entry(name.as_slice()).or_insert(i as u32);
            }
            let table = NameTable::new(names.iter().enumerate().map(|(i, n)| (n.as_slice(), i as u32)));
            for probe in probes.iter().chain(&names) {
                prop_assert_eq!(table.get(probe), reference.get(probe.as_slice()).copied());
            }
        }
    }
}
