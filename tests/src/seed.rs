//! Seeds for randomized tests: printed at test start, overridable by
//! `WALSHIP_SEED`, so every failure can be replayed.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// The seed for `test_name`: `$WALSHIP_SEED` if set, else a fresh random one.
/// Always printed (visible with `--nocapture`, and in the output of a failing
/// test).
pub fn seed(test_name: &str) -> u64 {
    let seed = match std::env::var("WALSHIP_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("WALSHIP_SEED={text:?} is not a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("{test_name}: seed {seed} (replay with WALSHIP_SEED={seed})");
    seed
}

/// A deterministic RNG for `test_name`, seeded by [`seed`].
pub fn rng(test_name: &str) -> StdRng {
    StdRng::seed_from_u64(seed(test_name))
}
