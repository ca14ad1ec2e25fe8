//! The worker as the operator sees it from outside: the format of its size flags, and the
//! bucket bounds of the histograms the gates and the planner read.

use std::str::FromStr;

/// A byte count written as a plain number or a Kubernetes quantity (`Ki`, `Mi`, `Gi`, `k`, `M`,
/// `G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a byte size (e.g. 1048576, 100Mi, 20M)"))?;
        let factor: u64 = match unit {
            "" => 1,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            other => return Err(format!("unknown byte unit {other:?} in {s:?}")),
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

/// Bounds of `request_duration_seconds`: fine where the SLOs and the latency checks draw
/// their lines (P50 45 s, P95 90 s, the 120 s spike), since a quantile between two bounds is
/// interpolated.
pub const DOCUMENT_SECONDS_BUCKETS: [f64; 17] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
    600.0,
];

/// Bounds of `page_duration_seconds`: from the text backend's milliseconds per page to a slow
/// GPU tier's tens of seconds.
pub const PAGE_SECONDS_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_as_kubernetes_quantities() {
        assert_eq!("100Mi".parse(), Ok(ByteSize(100 << 20)));
    }
}
