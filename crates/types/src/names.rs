//! Random readable app names (`brave-otter-42`), as Flynn gave when none was asked for; and
//! stack names, checked the same way everywhere they come in.

use crate::ValidationError;

/// Longest stack name.
pub const MAX_STACK_NAME_LEN: usize = 63;

/// A stack is a name (`busybox`, `bookworm`): a directory in a host's stacks dir, never a
/// path. `[a-z0-9][a-z0-9-]*`, at most [`MAX_STACK_NAME_LEN`] characters. The API checks it
/// wherever a stack is set (`meta["stack"]` of apps, artifacts and releases), the build before
/// it runs, and the host before it mounts a rootfs: a path there would make any host
/// directory (`/usr/local`, `/`) a job's root filesystem.
pub fn validate_stack_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STACK_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        return Ok(());
    }
    let shown: String = name.chars().take(80).collect();
    Err(ValidationError::new(
        "meta",
        format!(
            "invalid stack {shown:?}: a stack is a name like busybox or bookworm (lowercase \
             letters, digits and '-', at most {MAX_STACK_NAME_LEN} characters), never a path"
        ),
    ))
}

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

    #[test]
    fn stack_names_are_names_not_paths() {
        for ok in ["busybox", "bookworm", "debian-12", "0", &"s".repeat(63)] {
            super::validate_stack_name(ok).unwrap();
        }
        for bad in [
            "",
            "/usr/local",
            "/",
            "../x",
            ".",
            "a/b",
            "Busybox",
            "-x",
            "a b",
            "a.b",
            "a_b",
            &"s".repeat(64),
        ] {
            let e = super::validate_stack_name(bad).unwrap_err();
            assert!(e.message.contains("like busybox or bookworm"), "{bad}: {e}");
        }
    }
}
