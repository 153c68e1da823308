//! Random readable app names (`brave-otter-42`), as Flynn gave when none was asked for.

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lively",
    "lucky", "merry", "nimble", "proud", "quick", "quiet", "rapid", "shiny", "sunny", "swift",
    "tidy", "vivid", "witty", "zesty", "bold", "bright", "cosy", "daring", "fresh", "grand",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "maple", "river", "comet", "harbor", "meadow", "badger", "cedar", "dolphin",
    "ember", "fjord", "glacier", "heron", "island", "jaguar", "koala", "lagoon", "marten",
    "nebula", "orchid", "panda", "quartz", "raven", "sparrow", "tiger", "walrus", "willow", "yak",
    "zephyr",
];

/// A name from `seed` (the caller supplies randomness: this crate does no I/O).
/// Always a valid app name.
pub fn random_app_name(seed: u64) -> String {
    let a = ADJECTIVES[(seed % ADJECTIVES.len() as u64) as usize];
    let n = NOUNS[((seed / 31) % NOUNS.len() as u64) as usize];
    let num = (seed / (31 * 37)) % 1000;
    format!("{a}-{n}-{num}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_valid() {
        for seed in [0, 1, 99, u64::MAX, 123_456_789] {
            let name = super::random_app_name(seed);
            crate::validate_app_name(&name).unwrap();
        }
        assert_ne!(super::random_app_name(1), super::random_app_name(2));
    }
}
