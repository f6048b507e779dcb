//! `holdfast-bench plot`: latency by percentile from `.hgrm` files (several runs side by side;
//! x is 1/(1-p) on a log scale, HdrHistogram's convention, labelled as percentiles) and latency
//! over time (p50, p99, max per interval) from interval logs (`.hlog`), as SVG and PNG.
//! A rate sweep (`.csv`: `system,offered_per_s,p99_ms,p999_ms`, as bench/scripts/rate-sweep.sh
//! writes) becomes P99 and P99.9 latency against offered load, one line each per system, on a
//! log latency axis (a saturated system's seconds would flatten everyone's sub-millisecond).
//! Text needs a TrueType font: DejaVu Sans from Debian's fonts-dejavu-core, or `--font`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::cli::PlotArgs;
use crate::hist;

/// Fonts tried when `--font` is not given.
pub const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
/// Highest percentile drawn: 99.9999% (x = 10^6).
const PERCENTILE_AXIS_NINES_MAX: f64 = 6.0;
/// Lowest latency the log axis of a load chart shows: 10 us.
const LOAD_AXIS_MS_MIN: f64 = 0.01;

/// One line of a chart: a name and (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

pub fn run(args: &PlotArgs) -> Result<()> {
    load_font(args.font.as_deref())?;
    let mut by_percentile = Vec::new();
    let mut over_time = Vec::new();
    let mut sweep = Vec::new();
    for file in &args.files {
        let name = file.file_stem().map_or_else(
            || file.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let text = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        if file.extension().is_some_and(|e| e == "csv") {
            sweep.extend(sweep_series(std::str::from_utf8(&text)?)?);
        } else if file.extension().is_some_and(|e| e == "hgrm") {
            by_percentile.push((name, percentile_points(std::str::from_utf8(&text)?)?));
        } else {
            over_time.extend(interval_series(&name, &text).with_context(|| {
                format!("{} is neither .hgrm nor an interval log", file.display())
            })?);
        }
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let size = (args.width_px, args.height_px);
    let mut written = Vec::new();
    if !by_percentile.is_empty() {
        written.extend(render(
            &args.out,
            "percentiles",
            size,
            &Chart::Percentiles(&by_percentile),
        )?);
    }
    if !over_time.is_empty() {
        written.extend(render(
            &args.out,
            "over-time",
            size,
            &Chart::OverTime(&over_time),
        )?);
    }
    if !sweep.is_empty() {
        written.extend(render(&args.out, "load", size, &Chart::Load(&sweep))?);
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn load_font(explicit: Option<&Path>) -> Result<()> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_owned()],
        None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
    };
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            // The font lives for the rest of the process (plotters keeps a 'static reference).
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", path.display()))?;
            return Ok(());
        }
    }
    bail!("no font found (tried {candidates:?}): install Debian's fonts-dejavu-core or pass --font FILE.ttf")
}

/// (log10(1/(1-p)), latency ms) of every row of a `.hgrm` below percentile 1.
pub fn percentile_points(text: &str) -> Result<Vec<(f64, f64)>> {
    let parsed = hist::parse_hgrm(text)?;
    Ok(parsed
        .rows
        .iter()
        .filter(|r| r.percentile < 1.0)
        .map(|r| {
            (
                (1.0 / (1.0 - r.percentile))
                    .log10()
                    .min(PERCENTILE_AXIS_NINES_MAX),
                r.value_ms,
            )
        })
        .collect())
}

/// p50, p99 and max per interval of an interval log: (seconds from the first interval, ms).
pub fn interval_series(name: &str, log: &[u8]) -> Result<Vec<Series>> {
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut max = Vec::new();
    for entry in IntervalLogIterator::new(log) {
        let LogEntry::Interval(interval) =
            entry.map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?
        else {
            continue;
        };
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(interval.encoded_histogram())?;
        let h = hist::from_bytes(&bytes)?;
        let t = (interval.start_timestamp() + interval.duration()).as_secs_f64();
        p50.push((t, hist::quantile_us(&h, 0.5) as f64 / 1000.0));
        p99.push((t, hist::quantile_us(&h, 0.99) as f64 / 1000.0));
        max.push((
            t,
            if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
        ));
    }
    if p50.is_empty() {
        bail!("no intervals");
    }
    Ok(vec![
        (format!("{name} p50"), p50),
        (format!("{name} p99"), p99),
        (format!("{name} max"), max),
    ])
}

/// "SYSTEM p99" and "SYSTEM p99.9" lines of (offered requests/s, ms) from a sweep CSV, in the
/// order the systems first appear; rows sorted by offered load.
pub fn sweep_series(csv: &str) -> Result<Vec<Series>> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("empty sweep CSV")?;
    anyhow::ensure!(
        header.trim() == "system,offered_per_s,p99_ms,p999_ms",
        "sweep CSV header is {header:?}, not system,offered_per_s,p99_ms,p999_ms"
    );
    let mut series: Vec<Series> = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [system, offered, p99, p999] = fields[..] else {
            bail!("sweep CSV row {line:?} does not have 4 fields");
        };
        let offered: f64 = offered.parse().with_context(|| format!("row {line:?}"))?;
        for (suffix, value) in [("p99", p99), ("p99.9", p999)] {
            let value: f64 = value.parse().with_context(|| format!("row {line:?}"))?;
            let name = format!("{system} {suffix}");
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, points)) => points.push((offered, value)),
                None => series.push((name, vec![(offered, value)])),
            }
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(series)
}

enum Chart<'a> {
    Percentiles(&'a [Series]),
    OverTime(&'a [Series]),
    Load(&'a [Series]),
}

/// Writes PREFIX-WHAT.svg and PREFIX-WHAT.png.
fn render(prefix: &Path, what: &str, size: (u32, u32), chart: &Chart<'_>) -> Result<Vec<PathBuf>> {
    let stem = prefix
        .file_name()
        .map_or_else(|| "plot".into(), |s| s.to_string_lossy().into_owned());
    let svg = prefix.with_file_name(format!("{stem}-{what}.svg"));
    let png = prefix.with_file_name(format!("{stem}-{what}.png"));
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        chart.draw(&root)?;
        root.present()
            .map_err(|e| anyhow::anyhow!("write {}: {e:?}", svg.display()))?;
    }
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        chart.draw(&root)?;
        root.present()
            .map_err(|e| anyhow::anyhow!("write {}: {e:?}", png.display()))?;
    }
    Ok(vec![svg, png])
}

/// The whole decades (powers of ten, in ms) that hold every latency, at least one, none
/// below LOAD_AXIS_MS_MIN.
pub fn log_decades(latencies_ms: impl Iterator<Item = f64>) -> std::ops::Range<i32> {
    let (lo, hi) = latencies_ms.fold((f64::MAX, f64::MIN), |(lo, hi), ms| {
        let ms = ms.max(LOAD_AXIS_MS_MIN);
        (lo.min(ms), hi.max(ms))
    });
    if lo > hi {
        return 0..1;
    }
    let lo = lo.log10().floor() as i32;
    let hi = (hi.log10().ceil() as i32).max(lo + 1);
    lo..hi
}

/// "0.1", "1", "10", "1000" for a latency in ms on a decade.
pub fn ms_label(ms: f64) -> String {
    if ms < 1.0 {
        let digits = (-ms.log10()).round().max(0.0) as usize;
        format!("{ms:.digits$}")
    } else {
        format!("{ms:.0}")
    }
}

/// "99.9%" for x = 3 (x = log10(1/(1-p))).
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 - 100.0 / 10f64.powf(x);
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

impl Chart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing: {e:?}");
        root.fill(&WHITE).map_err(err)?;
        let (series, title, x_desc) = match self {
            Chart::Percentiles(s) => (*s, "Latency by percentile", "percentile"),
            Chart::OverTime(s) => (*s, "Latency over time", "seconds into the measured window"),
            Chart::Load(s) => (*s, "Latency by offered load", "offered load (requests/s)"),
        };
        let points = || series.iter().flat_map(|(_, p)| p.iter());
        let x_max = points().map(|p| p.0).fold(1.0, f64::max);
        let y_max = points().map(|p| p.1).fold(0.001, f64::max) * 1.1;
        // The load chart draws log10(ms) on a linear axis, whole decades, labelled in ms.
        let log_y = matches!(self, Chart::Load(_));
        let y_of = move |ms: f64| {
            if log_y {
                ms.max(LOAD_AXIS_MS_MIN).log10()
            } else {
                ms
            }
        };
        let y_range = if log_y {
            let decades = log_decades(points().map(|p| p.1));
            decades.start as f64..decades.end as f64
        } else {
            0.0..y_max
        };
        let x_range = match self {
            Chart::Percentiles(_) => 0.0..x_max.ceil().max(1.0),
            Chart::OverTime(_) | Chart::Load(_) => 0.0..x_max,
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.clone(), y_range.clone())
            .map_err(err)?;
        let is_percentiles = matches!(self, Chart::Percentiles(_));
        let decimals = if x_range.end < 20.0 { 1 } else { 0 };
        let label_x = move |x: &f64| {
            if is_percentiles {
                percentile_label(*x)
            } else {
                format!("{x:.decimals$}")
            }
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc)
            .y_desc("latency (ms)")
            .x_labels(if is_percentiles {
                x_range.end as usize + 1
            } else {
                10
            })
            .x_label_formatter(&label_x);
        let label_log_y = |y: &f64| ms_label(10f64.powf(*y));
        if log_y {
            mesh.y_labels((y_range.end - y_range.start) as usize + 1)
                .y_label_formatter(&label_log_y);
        }
        mesh.draw().map_err(err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|&(x, y)| (x, y_of(y))),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_csv_becomes_p99_and_p999_lines_per_system_sorted_by_load() {
        let csv = "system,offered_per_s,p99_ms,p999_ms\nholdfast,2000,1.5,3\ntokio,1000,0.9,2\nholdfast,1000,1,2.5\n";
        let series = sweep_series(csv).unwrap();
        let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["holdfast p99", "holdfast p99.9", "tokio p99", "tokio p99.9"]
        );
        assert_eq!(series[0].1, vec![(1000.0, 1.0), (2000.0, 1.5)]);
        assert_eq!(series[1].1, vec![(1000.0, 2.5), (2000.0, 3.0)]);
        assert!(sweep_series("a,b\n").is_err());
        assert!(sweep_series("system,offered_per_s,p99_ms,p999_ms\nx,1,2\n").is_err());
    }

    #[test]
    fn load_axis_spans_whole_decades_and_labels_them_in_ms() {
        assert_eq!(log_decades([0.25, 3.0, 546.3].into_iter()), -1..3);
        assert_eq!(log_decades([1.0].into_iter()), 0..1);
        assert_eq!(log_decades([0.0001, 0.5].into_iter()), -2..0);
        assert_eq!(log_decades(std::iter::empty()), 0..1);
        let labels: Vec<String> = (-2..=3).map(|e| ms_label(10f64.powi(e))).collect();
        assert_eq!(labels, ["0.01", "0.1", "1", "10", "100", "1000"]);
    }

    #[test]
    fn percentile_axis_labels_follow_the_nines() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }
}
