//! Dense n-gram ids for the few sequences of one segment (a hypothesis and its references).
//!
//! Every metric here compares n-gram *counts* between sequences. Instead of hashing strings or
//! tuples per n-gram, tokens are first mapped to small integers, and the n-grams of order `n` get
//! dense ids from the pair (id of the `(n-1)`-gram at `i`, token at `i+n-1`). Counting then uses
//! plain arrays indexed by id. Ids are exact (no hash collisions can merge two n-grams).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, non-cryptographic hasher (the "Fx" multiply-rotate scheme used by rustc).
/// Only used for in-memory tables of trusted shapes; collisions cost time, never correctness.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.hash = (self.hash.rotate_left(5) ^ x).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A vocabulary that lives across segments (one per worker): token string -> id, without
/// allocating for tokens already seen. Tokens of up to 15 bytes are keyed inline (bytes and
/// length in a `u128`), which avoids a pointer chase and a string comparison per lookup.
#[derive(Default)]
pub struct Vocab {
    short: FxHashMap<u128, u32>,
    long: FxHashMap<Box<str>, u32>,
}

impl Vocab {
    /// The id of `tok`, assigning the next free one if it is new.
    #[inline]
    pub fn id(&mut self, tok: &str) -> u32 {
        let next = self.len() as u32;
        let b = tok.as_bytes();
        if b.len() < 16 {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(b);
            buf[15] = b.len() as u8;
            return *self.short.entry(u128::from_le_bytes(buf)).or_insert(next);
        }
        if let Some(&id) = self.long.get(tok) {
            return id;
        }
        self.long.insert(tok.into(), next);
        next
    }
    /// Number of distinct tokens seen.
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
    /// Whether no token was seen yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An unsigned integer used as a packed n-gram key (`u64` or `u128`).
pub trait PackKey:
    Copy
    + Ord
    + std::ops::Shl<u32, Output = Self>
    + std::ops::Shr<u32, Output = Self>
    + std::ops::BitOr<Output = Self>
    + std::ops::BitAnd<Output = Self>
{
    /// Zero.
    const ZERO: Self;
    /// Width in bits.
    const BITS: u32;
    /// Widens a token.
    fn from_u32(x: u32) -> Self;
    /// The lowest `bits` bits set.
    fn low_mask(bits: u32) -> Self;
}

impl PackKey for u64 {
    const ZERO: Self = 0;
    const BITS: u32 = 64;
    fn from_u32(x: u32) -> Self {
        x as u64
    }
    fn low_mask(bits: u32) -> Self {
        (1u64 << bits) - 1
    }
}

impl PackKey for u128 {
    const ZERO: Self = 0;
    const BITS: u32 = 128;
    fn from_u32(x: u32) -> Self {
        x as u128
    }
    fn low_mask(bits: u32) -> Self {
        (1u128 << bits) - 1
    }
}

/// Packed n-gram keys of one sequence, for all orders `1..=max_n` at once.
///
/// Position `i` gets the key of the `max_n` tokens starting there, each stored plus one in
/// `bits` bits (0 = past the end). Sorting these keys once makes every order's n-grams
/// contiguous: the order-`n` n-gram at `i` is the key's top `n` groups, and it exists iff its
/// last group is not 0. Needs `max_n * bits <= K::BITS` and tokens `< 2^bits - 1`.
#[derive(Clone, Copy, Debug)]
pub struct Packing {
    /// Highest order.
    pub max_n: usize,
    /// Bits per token.
    pub bits: u32,
}

impl Packing {
    /// Whether tokens below `limit` (exclusive) fit this packing in keys of type `K`.
    pub fn fits<K: PackKey>(self, limit: u64) -> bool {
        self.bits < 64 && self.max_n as u32 * self.bits <= K::BITS && limit < (1u64 << self.bits)
    }

    /// Fills `out` with the sorted keys of `seq`.
    pub fn sorted_keys<K: PackKey>(self, seq: &[u32], out: &mut Vec<K>) {
        out.clear();
        for i in 0..seq.len() {
            let mut k = K::ZERO;
            for j in 0..self.max_n {
                let t = seq.get(i + j).map_or(K::ZERO, |&t| K::from_u32(t + 1));
                k = (k << self.bits) | t;
            }
            out.push(k);
        }
        out.sort_unstable();
    }

    #[inline]
    fn view<K: PackKey>(self, n: usize) -> (u32, K) {
        let shift = self.bits * (self.max_n - n) as u32;
        (shift, K::low_mask(self.bits))
    }

    /// `Σ min(count in a, count in b)` over order-`n` n-grams of two sorted key lists.
    pub fn overlap<K: PackKey>(self, n: usize, a: &[K], b: &[K]) -> u64 {
        let (shift, mask) = self.view::<K>(n);
        let (mut i, mut j, mut m) = (0, 0, 0u64);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i] >> shift, b[j] >> shift);
            if x & mask == K::ZERO {
                i += 1;
            } else if y & mask == K::ZERO {
                j += 1;
            } else if x < y {
                i += 1;
            } else if x > y {
                j += 1;
            } else {
                m += 1;
                i += 1;
                j += 1;
            }
        }
        m
    }

    /// `Σ min(count in hyp, max over refs of count in ref)` over order-`n` n-grams (BLEU's
    /// clipped count). `maxr` is scratch.
    pub fn clipped<K: PackKey>(
        self,
        n: usize,
        hyp: &[K],
        refs: &[&[K]],
        maxr: &mut Vec<u32>,
    ) -> u64 {
        if refs.len() == 1 {
            return self.overlap(n, hyp, refs[0]);
        }
        let (shift, mask) = self.view::<K>(n);
        // One slot per hypothesis position; a run of equal n-grams uses its first slot.
        maxr.clear();
        maxr.resize(hyp.len(), 0);
        for r in refs {
            let (mut i, mut j) = (0, 0);
            while i < hyp.len() && j < r.len() {
                let (x, y) = (hyp[i] >> shift, r[j] >> shift);
                if x & mask == K::ZERO {
                    i += 1;
                } else if y & mask == K::ZERO || y < x {
                    j += 1;
                } else if x < y {
                    i += 1;
                } else {
                    let start = i;
                    while i < hyp.len() && hyp[i] >> shift == x {
                        i += 1;
                    }
                    let mut c = 0;
                    while j < r.len() && r[j] >> shift == x {
                        c += 1;
                        j += 1;
                    }
                    maxr[start] = maxr[start].max(c);
                }
            }
        }
        let (mut i, mut m) = (0, 0u64);
        while i < hyp.len() {
            let (start, x) = (i, hyp[i] >> shift);
            while i < hyp.len() && hyp[i] >> shift == x {
                i += 1;
            }
            if x & mask != K::ZERO {
                m += ((i - start) as u64).min(maxr[start] as u64);
            }
        }
        m
    }
}

/// Reusable sorted-key buffers for the sequences of one segment, in both key widths.
#[derive(Default)]
pub struct KeyBufs {
    narrow: Vec<Vec<u64>>,
    wide: Vec<Vec<u128>>,
    maxr: Vec<u32>,
}

impl KeyBufs {
    /// For each order `1..=max_n`, the overlap statistic between sequence 0 and the others:
    /// `f(order, key lists)` gets the packed keys; tries `u64` keys, else `u128`. Returns
    /// `None` when the packing does not fit even `u128` (callers fall back to [`NgramTable`]).
    pub fn with_keys<R>(
        &mut self,
        seqs: &[&[u32]],
        pack: Packing,
        limit: u64,
        f: impl FnOnce(&mut dyn KeyView) -> R,
    ) -> Option<R> {
        if pack.fits::<u64>(limit) {
            fill(&mut self.narrow, seqs, pack);
            Some(f(&mut View {
                keys: &self.narrow[..seqs.len()],
                pack,
                maxr: &mut self.maxr,
            }))
        } else if pack.fits::<u128>(limit) {
            fill(&mut self.wide, seqs, pack);
            Some(f(&mut View {
                keys: &self.wide[..seqs.len()],
                pack,
                maxr: &mut self.maxr,
            }))
        } else {
            None
        }
    }
}

fn fill<K: PackKey>(bufs: &mut Vec<Vec<K>>, seqs: &[&[u32]], pack: Packing) {
    if bufs.len() < seqs.len() {
        bufs.resize_with(seqs.len(), Vec::new);
    }
    for (b, s) in bufs.iter_mut().zip(seqs) {
        pack.sorted_keys(s, b);
    }
}

/// Overlap queries on packed keys of a few sequences (sequence 0 is the hypothesis).
pub trait KeyView {
    /// `Σ min` of order-`n` n-grams between sequences `a` and `b`.
    fn overlap(&mut self, n: usize, a: usize, b: usize) -> u64;
    /// BLEU's clipped count of order `n`: sequence 0 against all the others.
    fn clipped(&mut self, n: usize) -> u64;
}

struct View<'a, K: PackKey> {
    keys: &'a [Vec<K>],
    pack: Packing,
    maxr: &'a mut Vec<u32>,
}

impl<K: PackKey> KeyView for View<'_, K> {
    fn overlap(&mut self, n: usize, a: usize, b: usize) -> u64 {
        self.pack.overlap(n, &self.keys[a], &self.keys[b])
    }
    fn clipped(&mut self, n: usize) -> u64 {
        let refs: Vec<&[K]> = self.keys[1..].iter().map(|v| v.as_slice()).collect();
        self.pack.clipped(n, &self.keys[0], &refs, self.maxr)
    }
}

/// Reusable scratch space holding dense n-gram ids of several sequences, order by order.
#[derive(Default)]
pub struct NgramTable {
    map: FxHashMap<u64, u32>,
    /// `ids[n-1][s][i]`: id of the n-gram starting at position `i` of sequence `s`.
    ids: Vec<Vec<Vec<u32>>>,
    /// Number of distinct n-grams of each order.
    counts: Vec<usize>,
    /// Count buffers for the comparisons, sized to the largest order's id range.
    pub(crate) buf_a: Vec<u32>,
    pub(crate) buf_b: Vec<u32>,
    pub(crate) buf_c: Vec<u32>,
}

impl NgramTable {
    /// Computes ids of all n-grams of orders `1..=max_order` of `seqs` (tokens as any `u32`).
    pub fn build(&mut self, seqs: &[&[u32]], max_order: usize) {
        if self.ids.len() < max_order {
            self.ids.resize_with(max_order, Vec::new);
        }
        self.counts.clear();
        for n in 1..=max_order {
            self.map.clear();
            let (done, rest) = self.ids.split_at_mut(n - 1);
            let cur = &mut rest[0];
            if cur.len() < seqs.len() {
                cur.resize_with(seqs.len(), Vec::new);
            }
            for (s, toks) in seqs.iter().enumerate() {
                let out = &mut cur[s];
                out.clear();
                if toks.len() < n {
                    continue;
                }
                for i in 0..=(toks.len() - n) {
                    let key = if n == 1 {
                        toks[i] as u64
                    } else {
                        ((done[n - 2][s][i] as u64) << 32) | toks[i + n - 1] as u64
                    };
                    let next = self.map.len() as u32;
                    out.push(*self.map.entry(key).or_insert(next));
                }
            }
            self.counts.push(self.map.len());
        }
        let need = self.counts.iter().copied().max().unwrap_or(0);
        for b in [&mut self.buf_a, &mut self.buf_b, &mut self.buf_c] {
            if b.len() < need {
                b.resize(need, 0);
            }
        }
    }

    /// Ids of the order-`n` n-grams of sequence `s`, in position order.
    #[inline]
    pub fn ids(&self, n: usize, s: usize) -> &[u32] {
        &self.ids[n - 1][s]
    }

    /// Sum over n-grams of `min(count in hyp, count in ref)` for order `n`.
    pub fn overlap(&mut self, n: usize, hyp: usize, r: usize) -> u64 {
        let (h, rc) = (&mut self.buf_a, &mut self.buf_b);
        let hyp_ids = &self.ids[n - 1][hyp];
        let ref_ids = &self.ids[n - 1][r];
        for &id in hyp_ids {
            h[id as usize] += 1;
        }
        let mut m = 0u64;
        for &id in ref_ids {
            let id = id as usize;
            if rc[id] < h[id] {
                m += 1;
            }
            rc[id] += 1;
        }
        for &id in hyp_ids {
            h[id as usize] = 0;
        }
        for &id in ref_ids {
            rc[id as usize] = 0;
        }
        m
    }

    /// Sum over hyp n-grams of `min(count in hyp, max count in any of refs)` for order `n`
    /// (BLEU's clipped count).
    pub fn clipped_overlap(&mut self, n: usize, hyp: usize, refs: std::ops::Range<usize>) -> u64 {
        let all = &self.ids[n - 1];
        let (maxr, cur, used) = (&mut self.buf_a, &mut self.buf_b, &mut self.buf_c);
        for r in refs.clone() {
            for &id in &all[r] {
                cur[id as usize] += 1;
            }
            for &id in &all[r] {
                let id = id as usize;
                if cur[id] > maxr[id] {
                    maxr[id] = cur[id];
                }
            }
            for &id in &all[r] {
                cur[id as usize] = 0;
            }
        }
        let mut m = 0u64;
        for &id in &all[hyp] {
            let id = id as usize;
            if used[id] < maxr[id] {
                m += 1;
                used[id] += 1;
            }
        }
        for &id in &all[hyp] {
            used[id as usize] = 0;
        }
        for r in refs {
            for &id in &all[r] {
                maxr[id as usize] = 0;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_ids_are_exact() {
        let mut v = Vocab::default();
        let words = [
            "a",
            "a\0",
            "",
            "abcdefghijklmno",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "é",
        ];
        let ids: Vec<u32> = words.iter().map(|w| v.id(w)).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 6]);
        let again: Vec<u32> = words.iter().map(|w| v.id(w)).collect();
        assert_eq!(again, ids);
        assert_eq!(v.len(), 7);
    }

    #[test]
    fn overlap_counts_min() {
        let mut t = NgramTable::default();
        let a = [1u32, 2, 1, 2, 3];
        let b = [2u32, 1, 2, 9];
        t.build(&[&a, &b], 3);
        assert_eq!(t.overlap(1, 0, 1), 3); // 1:min(2,1) + 2:min(2,2)
        assert_eq!(t.overlap(2, 0, 1), 2); // (2,1) (1,2)
        assert_eq!(t.overlap(3, 0, 1), 1); // (2,1,2)
        assert_eq!(t.clipped_overlap(1, 0, 1..2), 3);
        // buffers are reset
        assert_eq!(t.overlap(1, 0, 1), 3);
    }

    #[test]
    fn sorted_paths_agree_with_table() {
        let h = [5u32, 5, 5, 7, 5, 7];
        let r1 = [5u32, 7, 5];
        let r2 = [5u32, 5, 7, 5, 5];
        let mut t = NgramTable::default();
        t.build(&[&h, &r1, &r2], 3);
        let (mut kh, mut k1, mut k2, mut m): (Vec<u128>, Vec<u128>, Vec<u128>, _) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let p = Packing { max_n: 3, bits: 21 };
        p.sorted_keys(&h, &mut kh);
        p.sorted_keys(&r1, &mut k1);
        p.sorted_keys(&r2, &mut k2);
        for n in 1..=3 {
            assert_eq!(p.overlap(n, &kh, &k1), t.overlap(n, 0, 1));
            assert_eq!(p.overlap(n, &k2, &kh), t.overlap(n, 2, 0));
            assert_eq!(
                p.clipped(n, &kh, &[&k1, &k2], &mut m),
                t.clipped_overlap(n, 0, 1..3)
            );
        }
    }

    #[test]
    fn clipped_takes_max_over_refs() {
        let mut t = NgramTable::default();
        let h = [5u32, 5, 5];
        let r1 = [5u32];
        let r2 = [5u32, 5];
        t.build(&[&h, &r1, &r2], 1);
        assert_eq!(t.clipped_overlap(1, 0, 1..3), 2);
    }
}
