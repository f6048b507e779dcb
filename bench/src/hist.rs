//! Latency histograms: 1 us .. 60 s at 3 significant digits, values in microseconds. One per
//! worker (per kind of latency), shipped to the parent V2-deflate serialized and merged there.
//! Also writes the HdrHistogram percentile distribution (`.hgrm`, as wrk2 prints it), reads it
//! back (for `plot` and tests), and writes interval logs.

use std::io::{self, Write};

use anyhow::{bail, Context, Result};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Lowest trackable latency, microseconds.
pub const LOWEST_US: u64 = 1;
/// Highest trackable latency, microseconds (60 s). Larger samples are clamped and counted.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept.
pub const SIGFIGS: u8 = 3;
/// Percentile ticks per half distance in `.hgrm` output (HdrHistogram's and wrk2's default).
pub const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;
/// `.hgrm` values are printed in milliseconds (wrk2's convention); histograms hold microseconds.
pub const HGRM_VALUE_SCALE_US_PER_MS: f64 = 1000.0;

pub type Hist = Histogram<u64>;

/// A new, empty latency histogram (allocated up front: ~24 KiB at these bounds).
pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIGS).expect("static bounds are valid")
}

/// Records `value_us`, clamped into the trackable range. Returns true if it was clamped high.
pub fn record_clamped(hist: &mut Hist, value_us: u64) -> bool {
    let clamped = value_us.clamp(LOWEST_US, HIGHEST_US);
    hist.record(clamped).expect("value clamped into range");
    value_us > HIGHEST_US
}

/// Serializes with the V2 deflate format (what HdrHistogram's interval logs carry).
pub fn to_bytes(hist: &Hist) -> Vec<u8> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut out)
        .expect("serializing to a Vec cannot fail");
    out
}

/// Deserializes a histogram written by [`to_bytes`] (or any V2 / V2 deflate encoder).
pub fn from_bytes(bytes: &[u8]) -> Result<Hist> {
    let hist: Hist = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .context("bad serialized histogram")?;
    Ok(hist)
}

/// Adds `from` into `into`. Both have the standard bounds, so this cannot fail.
pub fn merge(into: &mut Hist, from: &Hist) {
    into.add(from).expect("histograms share bounds");
}

/// Latency at `quantile` (0..=1) in microseconds; 0 for an empty histogram.
pub fn quantile_us(hist: &Hist, quantile: f64) -> u64 {
    if hist.is_empty() {
        0
    } else {
        hist.value_at_quantile(quantile)
    }
}

/// Writes the percentile distribution in HdrHistogram's text format (values in ms):
/// a `Value Percentile TotalCount 1/(1-Percentile)` table and the Mean/StdDeviation/Max/Total
/// footer. HdrHistogram's plotter and [`parse_hgrm`] read it.
pub fn write_hgrm(hist: &Hist, out: &mut impl Write) -> io::Result<()> {
    let scale = HGRM_VALUE_SCALE_US_PER_MS;
    let digits = usize::from(SIGFIGS);
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total: u64 = 0;
    if !hist.is_empty() {
        for step in hist.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let value_ms = hist.highest_equivalent(step.value_iterated_to()) as f64 / scale;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let inverse = 1.0 / (1.0 - quantile);
                writeln!(
                    out,
                    "{value_ms:>12.digits$} {quantile:>14.12} {total:>10} {inverse:>14.2}"
                )?;
            } else {
                writeln!(out, "{value_ms:>12.digits$} {quantile:>14.12} {total:>10}")?;
            }
        }
    }
    let mean = if hist.is_empty() {
        0.0
    } else {
        hist.mean() / scale
    };
    let stdev = if hist.is_empty() {
        0.0
    } else {
        hist.stdev() / scale
    };
    let max = if hist.is_empty() {
        0.0
    } else {
        hist.max() as f64 / scale
    };
    writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:>12.digits$}, Total count    = {:>12}]",
        hist.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        sub_bucket_count()
    )?;
    Ok(())
}

/// HdrHistogram's sub-bucket count for [`SIGFIGS`]: the power of two above 2 * 10^SIGFIGS.
fn sub_bucket_count() -> u64 {
    (2 * 10u64.pow(u32::from(SIGFIGS))).next_power_of_two()
}

/// One row of a `.hgrm` table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HgrmRow {
    pub value_ms: f64,
    pub percentile: f64,
    pub total_count: u64,
}

/// A `.hgrm` file read back: its rows and footer.
#[derive(Clone, Debug, PartialEq)]
pub struct Hgrm {
    pub rows: Vec<HgrmRow>,
    pub mean_ms: f64,
    pub stdev_ms: f64,
    pub max_ms: f64,
    pub total_count: u64,
}

/// Parses HdrHistogram percentile-distribution text (ours, wrk2's or HdrHistogram's).
pub fn parse_hgrm(text: &str) -> Result<Hgrm> {
    let mut rows = Vec::new();
    let mut footer = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("Value") {
            continue;
        }
        if let Some(inner) = line.strip_prefix("#[").and_then(|l| l.strip_suffix(']')) {
            for part in inner.split(',') {
                let (key, value) = part.split_once('=').context("footer field without '='")?;
                let value = value.trim();
                match key.trim() {
                    "Mean" => footer.0 = Some(value.parse::<f64>()?),
                    "StdDeviation" => footer.1 = Some(value.parse::<f64>()?),
                    "Max" => footer.2 = Some(value.parse::<f64>()?),
                    "Total count" => footer.3 = Some(value.parse::<u64>()?),
                    _ => {}
                }
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            bail!(
                "hgrm row has {} fields, want 3 or 4: {line:?}",
                fields.len()
            );
        }
        rows.push(HgrmRow {
            value_ms: fields[0]
                .parse()
                .with_context(|| format!("bad value in {line:?}"))?,
            percentile: fields[1]
                .parse()
                .with_context(|| format!("bad percentile in {line:?}"))?,
            total_count: fields[2]
                .parse()
                .with_context(|| format!("bad count in {line:?}"))?,
        });
    }
    let (Some(mean_ms), Some(stdev_ms), Some(max_ms), Some(total_count)) = footer else {
        bail!("hgrm footer (Mean, StdDeviation, Max, Total count) missing");
    };
    Ok(Hgrm {
        rows,
        mean_ms,
        stdev_ms,
        max_ms,
        total_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(values_us: impl IntoIterator<Item = u64>) -> Hist {
        let mut hist = new_hist();
        for v in values_us {
            record_clamped(&mut hist, v);
        }
        hist
    }

    #[test]
    fn merged_worker_histograms_equal_one_histogram_of_all_samples() {
        let a = filled((1..=5_000).map(|i| i * 3));
        let b = filled((1..=7_000).map(|i| 20_000 + i * 11));
        let mut merged = new_hist();
        for part in [&a, &b] {
            merge(&mut merged, &from_bytes(&to_bytes(part)).unwrap());
        }
        let all = filled(
            (1..=5_000)
                .map(|i| i * 3)
                .chain((1..=7_000).map(|i| 20_000 + i * 11)),
        );
        assert_eq!(merged.len(), 12_000);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                all.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(merged.max(), all.max());
    }

    #[test]
    fn samples_above_sixty_seconds_are_clamped_and_reported() {
        let mut hist = new_hist();
        assert!(record_clamped(&mut hist, 61_000_000));
        assert!(!record_clamped(&mut hist, 0));
        assert_eq!(hist.len(), 2);
        assert!(hist.max() >= HIGHEST_US && hist.max() < HIGHEST_US + HIGHEST_US / 1000);
        assert_eq!(hist.min(), LOWEST_US);
    }

    #[test]
    fn hgrm_output_parses_back_with_matching_counts_and_percentiles() {
        let hist = filled((1..=10_000).map(|i| i * 10));
        let mut text = Vec::new();
        write_hgrm(&hist, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        let parsed = parse_hgrm(&text).unwrap();
        assert_eq!(parsed.total_count, 10_000);
        let last = parsed.rows.last().unwrap();
        assert_eq!(last.total_count, 10_000);
        assert_eq!(last.percentile, 1.0);
        assert!((parsed.max_ms - 100.0).abs() < 0.1, "max {}", parsed.max_ms);
        assert!(
            (parsed.mean_ms - 50.005).abs() < 0.1,
            "mean {}",
            parsed.mean_ms
        );
        assert!(parsed
            .rows
            .windows(2)
            .all(|w| w[0].value_ms <= w[1].value_ms
                && w[0].percentile <= w[1].percentile
                && w[0].total_count <= w[1].total_count));
        let median = parsed.rows.iter().find(|r| r.percentile >= 0.5).unwrap();
        assert!(
            (median.value_ms - 50.0).abs() < 0.1,
            "p50 {}",
            median.value_ms
        );
    }
}
