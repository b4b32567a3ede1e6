//! Human-friendly sizes ("2MB", "64KB", "1 GiB") and durations ("10s", "5m",
//! "1m30s", "250ms"), parsed the way influx-spout's users expect (1MB = 1,048,576).
use std::time::Duration;

/// Parse a byte size. Units are binary (1KB = 1024, as c2h5oh/datasize);
/// `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, `T`/`TB`/`TiB`, case-insensitive;
/// a space between number and unit is allowed; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a size (expected e.g. \"64KB\" or \"2MB\")"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bad number {number:?})"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?} is not a size (unknown unit {other:?}; use B, KB, MB, GB or TB)"
            ))
        }
    };
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Parse a duration: one or more `<number><unit>` terms, units `ns`, `us`/`µs`,
/// `ms`, `s`, `m`, `h`, `d` (Go's `time.ParseDuration` plus days).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let original = text;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration (expected e.g. \"10s\" or \"5m\")".into());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(split);
        if number.is_empty() {
            return Err(format!(
                "{original:?} is not a duration (expected e.g. \"500ms\", \"10s\", \"5m\")"
            ));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{original:?} is not a duration (bad number {number:?})"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let unit_ns: f64 = match unit.trim() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "" => {
                return Err(format!(
                    "{original:?} is not a duration (missing unit; use ms, s, m or h)"
                ))
            }
            other => {
                return Err(format!(
                    "{original:?} is not a duration (unknown unit {other:?})"
                ))
            }
        };
        total_ns += value * unit_ns;
        rest = next.trim_start();
    }
    if total_ns > u64::MAX as f64 {
        return Err(format!("{original:?} is too long"));
    }
    Ok(Duration::from_nanos(total_ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert_eq!(parse_size("2048KB"), Ok(2 << 20));
        assert_eq!(parse_size("2 MB"), Ok(2 << 20));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1400"), Ok(1400));
        assert_eq!(parse_size("1.5KB"), Ok(1536));
        assert!(parse_size("2XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("10y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }
}
