//! Sizes in bytes as operators write them (`268435456`, `256M`, `256MiB`), and the default
//! client memory budget taken from the memory limit of the node's cgroup.

use serde::Deserialize;
use std::path::Path;

/// The budget where no cgroup limit is set.
const FALLBACK: u64 = 512 * 1024 * 1024;
/// A cgroup limit at or above this means "no limit" (cgroup v1 writes a page-rounded
/// `i64::MAX` there).
const NO_LIMIT: u64 = 1 << 60;

/// The budget a node runs with and where it came from, logged at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetChoice {
    pub bytes: u64,
    /// `configured`, `cgroup` (a quarter of its memory limit) or `default`.
    pub source: &'static str,
}

/// The configured budget, else a quarter of the cgroup memory limit, else 512 MiB.
/// Reads two small files once at start-up, before the runtime exists.
pub fn choose_budget(configured: Option<u64>) -> BudgetChoice {
    if let Some(bytes) = configured {
        return BudgetChoice {
            bytes,
            source: "configured",
        };
    }
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| cgroup_limit(Path::new(path)));
    match cgroup {
        Some(limit) => BudgetChoice {
            bytes: (limit / 4).max(1),
            source: "cgroup",
        },
        None => BudgetChoice {
            bytes: FALLBACK,
            source: "default",
        },
    }
}

/// The limit in a cgroup memory file; `None` for a missing file, `max` or a huge value.
fn cgroup_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    limit_in(&text)
}

fn limit_in(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?;
    (limit > 0 && limit < NO_LIMIT).then_some(limit)
}

/// Parses a byte count: plain digits, or digits followed by `K`/`M`/`G` (or `KiB`/`MiB`/
/// `GiB`, or `KB`/`MB`/`GB`; all powers of 1024, case-insensitive).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size in bytes (like 268435456 or 256MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit (use K, M, G, KiB, MiB or GiB)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A byte count in the YAML config: a number or a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(n) => Ok(ByteSize(n)),
            Written::Text(text) => parse_bytes(&text)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_with_or_without_a_unit() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("256 mb"), Ok(256 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1gib"), Ok(1 << 30));
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
        assert!(parse_bytes("18446744073709551615G").is_err());
    }

    #[test]
    fn a_cgroup_without_a_limit_means_none() {
        assert_eq!(limit_in("max\n"), None);
        assert_eq!(limit_in("9223372036854771712\n"), None);
        assert_eq!(limit_in("0\n"), None);
        assert_eq!(limit_in("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn a_configured_budget_wins() {
        let choice = choose_budget(Some(1234));
        assert_eq!(choice.bytes, 1234);
        assert_eq!(choice.source, "configured");
        let default = choose_budget(None);
        assert!(default.bytes > 0);
    }

    #[test]
    fn yaml_takes_numbers_and_units() {
        let n: ByteSize = serde_yaml::from_str("1024").unwrap();
        let s: ByteSize = serde_yaml::from_str("\"1KiB\"").unwrap();
        assert_eq!(n, ByteSize(1024));
        assert_eq!(s, ByteSize(1024));
        assert!(serde_yaml::from_str::<ByteSize>("\"lots\"").is_err());
    }
}
