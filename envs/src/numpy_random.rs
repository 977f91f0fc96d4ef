//! NumPy's default random stream, reimplemented so that seeded resets match Gymnasium bit for bit.
//!
//! Gymnasium seeds an environment with `np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))`
//! and draws initial states with `Generator.uniform(low, high)`, which is
//! `low + (high - low) * next_double()`. This module reproduces the three pieces:
//! [`SeedSequence`](https://numpy.org/doc/stable/reference/random/bit_generators/generated/numpy.random.SeedSequence.html)
//! entropy mixing, the PCG64 (XSL-RR 128/64) generator, and the 53-bit double conversion.
//! It is private: the crate only uses it to draw reset states.

/// SeedSequence constants from NumPy's `bit_generator.pyx` (32-bit hash mixing).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// The 128-bit LCG multiplier of PCG64 (`PCG_DEFAULT_MULTIPLIER_128`).
const PCG_MULTIPLIER: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341u128;

/// The PCG64 bit generator as NumPy initialises it from a SeedSequence.
#[derive(Clone, Debug)]
pub(crate) struct NumpyPcg64 {
    state: u128,
    increment: u128,
}

impl NumpyPcg64 {
    /// Equivalent to `np.random.PCG64(np.random.SeedSequence(entropy))` for a non-negative
    /// Python integer `entropy` (here at most 128 bits).
    pub(crate) fn from_seed(entropy: u128) -> Self {
        let pool = seed_sequence_pool(&int_to_u32_words(entropy));
        // PCG64 asks SeedSequence for 4 uint64 words: the 32-bit words paired little-endian.
        let words32 = generate_state_u32(&pool, 8);
        let words64: Vec<u64> = words32
            .chunks_exact(2)
            .map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32))
            .collect();
        let initial_state = (u128::from(words64[0]) << 64) | u128::from(words64[1]);
        let sequence = (u128::from(words64[2]) << 64) | u128::from(words64[3]);
        // pcg_setseq_128_srandom_r
        let mut generator = NumpyPcg64 {
            state: 0,
            increment: (sequence << 1) | 1,
        };
        generator.advance();
        generator.state = generator.state.wrapping_add(initial_state);
        generator.advance();
        generator
    }

    fn advance(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.increment);
    }

    /// `pcg64_next64`: step the LCG, then the XSL-RR output function.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.advance();
        let xored = ((self.state >> 64) as u64) ^ (self.state as u64);
        xored.rotate_right((self.state >> 122) as u32)
    }

    /// `next_double`: uniform in `[0, 1)` with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `Generator.uniform(low, high)` for one element: `low + (high - low) * next_double()`.
    pub(crate) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }
}

/// A Python integer as NumPy's `_int_to_uint32_array` splits it: little-endian 32-bit words,
/// at least one word (so 0 becomes `[0]`).
fn int_to_u32_words(mut value: u128) -> Vec<u32> {
    let mut words = vec![(value & 0xffff_ffff) as u32];
    value >>= 32;
    while value > 0 {
        words.push((value & 0xffff_ffff) as u32);
        value >>= 32;
    }
    words
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

/// `SeedSequence.mix_entropy` with no spawn key: the 4-word entropy pool.
fn seed_sequence_pool(entropy: &[u32]) -> [u32; POOL_SIZE] {
    let mut hash_const = INIT_A;
    let mut pool = [0u32; POOL_SIZE];
    for (index, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(entropy.get(index).copied().unwrap_or(0), &mut hash_const);
    }
    for source in 0..POOL_SIZE {
        for destination in 0..POOL_SIZE {
            if source != destination {
                pool[destination] = mix(pool[destination], hashmix(pool[source], &mut hash_const));
            }
        }
    }
    for &extra in entropy.iter().skip(POOL_SIZE) {
        for slot in pool.iter_mut() {
            *slot = mix(*slot, hashmix(extra, &mut hash_const));
        }
    }
    pool
}

/// `SeedSequence.generate_state(n_words, np.uint32)`.
fn generate_state_u32(pool: &[u32; POOL_SIZE], n_words: usize) -> Vec<u32> {
    let mut hash_const = INIT_B;
    (0..n_words)
        .map(|index| {
            let mut value = pool[index % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values printed by NumPy 2.4.6:
    //   np.random.SeedSequence(s).generate_state(4, np.uint32)
    //   np.random.Generator(np.random.PCG64(s)).integers(0, 2**64, dtype=np.uint64, size=2)
    //   np.random.Generator(np.random.PCG64(s)).random(2)
    #[test]
    fn seed_sequence_state_matches_numpy() {
        for (seed, expected) in REFERENCE_SEED_SEQUENCE_STATES {
            let pool = seed_sequence_pool(&int_to_u32_words(*seed));
            assert_eq!(
                generate_state_u32(&pool, 4),
                expected.to_vec(),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn pcg64_stream_matches_numpy() {
        for (seed, expected_u64, expected_f64) in REFERENCE_PCG64_STREAMS {
            let mut generator = NumpyPcg64::from_seed(*seed);
            let first: Vec<u64> = (0..2).map(|_| generator.next_u64()).collect();
            assert_eq!(first, expected_u64.to_vec(), "seed {seed}");
            let mut generator = NumpyPcg64::from_seed(*seed);
            let doubles: Vec<f64> = (0..2).map(|_| generator.next_f64()).collect();
            assert_eq!(doubles, expected_f64.to_vec(), "seed {seed}");
        }
    }

    // Generated with NumPy 2.4.6 by the snippets in the comment above.
    const REFERENCE_SEED_SEQUENCE_STATES: &[(u128, [u32; 4])] = &[
        (0, [2968811710, 3677149159, 745650761, 2884920346]),
        (1, [1835504127, 1731038949, 1320224556, 2330041505]),
        (42, [3444837047, 2669555309, 2046530742, 3581440988]),
        (4294967295, [1992424968, 705021410, 3255730584, 540206095]),
        (4294967301, [3796490668, 4190198742, 909250263, 2986482496]),
        (
            9223372036854788153,
            [2061841673, 2292106383, 3853204041, 649809019],
        ),
        (
            18446744073709551615,
            [2458692877, 2931597649, 2251873402, 295448644],
        ),
        (
            1267650600228229401496703205383,
            [1523537530, 7724331, 1975607920, 2869613165],
        ),
    ];
    const REFERENCE_PCG64_STREAMS: &[(u128, [u64; 2], [f64; 2])] = &[
        (
            0,
            [11749869230777074271, 4976686463289251617],
            [0.6369616873214543, 0.2697867137638703],
        ),
        (
            1,
            [9441442522235856127, 17532960557476522086],
            [0.5118216247002567, 0.9504636963259353],
        ),
        (
            42,
            [14276969152011380360, 8095878257575067585],
            [0.7739560485559633, 0.4388784397520523],
        ),
        (
            4294967295,
            [4647538520743280031, 4041050679407036418],
            [0.2519435680449965, 0.21906579628685663],
        ),
        (
            4294967301,
            [14281546376153053393, 8683300866460616067],
            [0.7742041803738812, 0.47072268318809307],
        ),
        (
            9223372036854788153,
            [9116129000838757916, 10625643075464141531],
            [0.4941863433683745, 0.5760172653236889],
        ),
        (
            18446744073709551615,
            [12544278110101001871, 15593249672699323225],
            [0.6800266789616931, 0.8453117585624743],
        ),
        (
            1267650600228229401496703205383,
            [1204997375016922528, 1915797790937793275],
            [0.0653230385916338, 0.10385560634888424],
        ),
    ];
}
