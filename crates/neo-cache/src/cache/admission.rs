//! Which values read from Redis enter a full L1: a doorkeeper of keys seen once.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Remembers, approximately, which keys were read from Redis since its last reset, so that a
/// full L1 takes a key on its second read rather than its first.
///
/// Filling L1 on every Redis hit made most of an L2 hit's tail: at capacity each insert of a
/// new key makes moka record it, weigh it against a victim and evict one (and moka's
/// TinyLFU refuses most keys seen once anyway). Measured with `cache_peers` (12,000 keys read
/// once each, an L1 of 10,000): L2-hit p99 1.14-1.45x a raw GET + decode filling L1 on each
/// hit, 0.94-1.18x not filling it (six alternating runs each; docs/PERFORMANCE.md).
///
/// Two bits per key in a bitmap of at least eight bits per L1 entry; cleared once as many
/// keys as L1 holds were marked, so a key counts as seen again for about one L1's worth of
/// other keys. A false positive (at most about 5 %, just before a reset) only admits a key
/// early.
#[derive(Debug)]
pub(super) struct Doorkeeper {
    words: Box<[AtomicU64]>,
    /// `words.len() * 64 - 1`: bit indexes are hashes masked by it.
    mask: u64,
    marked: AtomicU64,
    reset_after: u64,
    hasher: foldhash::fast::FixedState,
}

/// Fewest and most bits a doorkeeper holds (128 bytes, 2 MiB).
const BITS: (u64, u64) = (1 << 10, 1 << 24);

impl Doorkeeper {
    /// A doorkeeper for an L1 of `capacity` entries.
    pub(super) fn new(capacity: u64) -> Self {
        let bits = capacity
            .saturating_mul(8)
            .clamp(BITS.0, BITS.1)
            .next_power_of_two();
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        Doorkeeper {
            words,
            mask: bits - 1,
            marked: AtomicU64::new(0),
            reset_after: capacity.max(1),
            hasher: foldhash::fast::FixedState::with_seed(0x646f_6f72_6b65_6570),
        }
    }

    /// Whether `key` was marked since the last reset; marks it when it was not.
    pub(super) fn seen_before(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        let bits = [hash & self.mask, hash.rotate_left(32) & self.mask];
        let seen = bits.iter().all(|&bit| self.is_set(bit));
        if !seen {
            for bit in bits {
                self.word(bit).fetch_or(1 << (bit % 64), Ordering::Relaxed);
            }
            if self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= self.reset_after {
                self.reset();
            }
        }
        seen
    }

    fn is_set(&self, bit: u64) -> bool {
        self.word(bit).load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
    }

    fn word(&self, bit: u64) -> &AtomicU64 {
        // `bit` is masked below `words.len() * 64`.
        &self.words[usize::try_from(bit / 64).unwrap_or(0)]
    }

    /// Forgets every key (races with marks only forget or keep a few keys).
    fn reset(&self) {
        self.marked.store(0, Ordering::Relaxed);
        for word in &self.words {
            word.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Doorkeeper;

    #[test]
    fn a_key_is_seen_on_its_second_sighting_until_a_reset() {
        let doorkeeper = Doorkeeper::new(100);
        assert!(!doorkeeper.seen_before("a"));
        assert!(doorkeeper.seen_before("a"));
        assert!(doorkeeper.seen_before("a"), "marks stay until a reset");
        // New keys seen once reach the L1's capacity of marks (100) within these 120: all
        // are forgotten then.
        let early: usize = (0..120)
            .filter(|i| doorkeeper.seen_before(&format!("k{i}")))
            .count();
        assert!(early <= 5, "{early} of 120 new keys counted as seen");
        assert!(!doorkeeper.seen_before("a"), "forgotten at the reset");
    }

    #[test]
    fn few_new_keys_pass_for_seen_ones_at_the_fullest() {
        let doorkeeper = Doorkeeper::new(10_000);
        let early = (0..9_999)
            .filter(|i| doorkeeper.seen_before(&format!("key:{i}")))
            .count();
        // Two of 131,072 bits per key, 9,999 keys: about 2 % false positives at the end.
        assert!(early < 300, "{early} of 9,999 new keys counted as seen");
        assert_eq!(doorkeeper.words.len(), (1 << 17) / 64);
    }
}
