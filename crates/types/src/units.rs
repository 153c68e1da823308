//! Human units for limits: `512MB` is 512 MiB (binary, as Flynn and Docker read it).

use crate::ValidationError;

/// Parses a byte size: `536870912`, `512M`, `512MB`, `512MiB`, `1.5GB`, `64k` (case-insensitive,
/// binary multiples). The error's field is `size`; a caller that knows which limit it parses
/// names it instead.
pub fn parse_bytes(s: &str) -> Result<u64, ValidationError> {
    let err = |m: String| ValidationError::new("size", m);
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err(format!(
            "invalid size {s:?}: expected a number with an optional unit, like 512MB"
        )));
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KB, MB, GB or TB)"
            )));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| err(format!("invalid size {s:?}: {num:?} is not a number")))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err(format!("invalid size {s:?}: too large")));
    }
    Ok(bytes.round() as u64)
}

/// Formats bytes the way `parse_bytes` reads them back: `512MB`, `1.5GB`, `100B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{}{name}", bytes / size)
            } else {
                format!("{v:.2}{name}")
            };
        }
    }
    format!("{bytes}B")
}

/// Parses a CPU amount in milli-CPU: `500`, `500m` (1000 = one core).
pub fn parse_milli_cpu(s: &str) -> Result<u64, ValidationError> {
    let t = s.trim();
    let digits = t.strip_suffix('m').unwrap_or(t);
    match digits.parse::<u64>() {
        Ok(0) | Err(_) => Err(ValidationError::new(
            "cpu",
            format!(
                "invalid cpu {s:?}: expected milli-CPU as a positive whole number (1000 = one core), like 500 or 500m"
            ),
        )),
        Ok(v) => Ok(v),
    }
}

/// Parses a positive count (max_fd, max_procs).
pub fn parse_count(field: &str, s: &str) -> Result<u64, ValidationError> {
    match s.trim().parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ValidationError::new(
            field,
            format!("invalid {field} {s:?}: expected a positive whole number"),
        )),
    }
}

pub(crate) fn positive(field: &str, v: Option<u64>) -> Result<(), ValidationError> {
    if v == Some(0) {
        return Err(ValidationError::new(
            field,
            format!("{field} must be greater than 0"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MB"), Ok(536_870_912));
        assert_eq!(parse_bytes("512mb"), Ok(536_870_912));
        assert_eq!(parse_bytes("512MiB"), Ok(536_870_912));
        assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5XB").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("1..5G").is_err());
        assert_eq!(format_bytes(536_870_912), "512MB");
        assert_eq!(format_bytes(3 << 29), "1.50GB");
        assert_eq!(format_bytes(12), "12B");
    }

    #[test]
    fn cpu_and_counts() {
        assert_eq!(parse_milli_cpu("500"), Ok(500));
        assert_eq!(parse_milli_cpu("250m"), Ok(250));
        assert!(parse_milli_cpu("0").is_err());
        assert!(parse_milli_cpu("1.5").is_err());
        assert_eq!(parse_count("max_fd", "1024"), Ok(1024));
        assert!(parse_count("max_fd", "-1").is_err());
        // Each parser names what it parses, so the API's 422 points at it.
        assert_eq!(parse_bytes("5XB").unwrap_err().field, "size");
        assert_eq!(parse_milli_cpu("0").unwrap_err().field, "cpu");
        assert_eq!(
            parse_count("max_procs", "0").unwrap_err().field,
            "max_procs"
        );
    }
}
