//! Comparing a presented secret (API key, cluster token) with the real one.

/// Whether `presented` is `secret`, in time that depends only on their lengths (not on where
/// they first differ), so a caller cannot find the secret byte by byte by timing refusals. An
/// empty secret matches nothing: a process whose secret is missing admits nobody.
pub fn secret_eq(presented: &[u8], secret: &[u8]) -> bool {
    !secret.is_empty()
        && presented.len() == secret.len()
        && presented
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn only_the_secret_itself_matches_and_an_empty_one_never() {
        assert!(secret_eq(b"s3cret", b"s3cret"));
        assert!(!secret_eq(b"s3creT", b"s3cret"));
        assert!(!secret_eq(b"s3cre", b"s3cret"));
        assert!(!secret_eq(b"s3crett", b"s3cret"));
        assert!(!secret_eq(b"", b""));
        assert!(!secret_eq(b"x", b""));
    }
}
