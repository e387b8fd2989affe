//! Carbon: gCO2eq = kWh x PUE x intensity, with the intensity taken from
//! (in this order) a constant, a time series integrated against the run's
//! energy timeline, a zone from the shipped table, or the world average.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// World average carbon intensity (IEA 2019), used when nothing else is known.
pub const WORLD_G_PER_KWH: f64 = 475.0;

/// Zone table: countries (OWID/Ember) and cloud regions, derived from
/// `global_energy_mix.json` and `cloud/impact.csv` in the `codecarbon`
/// 3.3.2 wheel (MIT); see `crates/energy/data/ATTRIBUTION.md`.
pub const ZONES_CSV: &str = include_str!("../data/zones.csv");

/// A carbon problem, naming the file and line where there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CarbonError {
    /// An intensity file is malformed.
    #[error("{path}{}: {msg}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        msg: String,
    },
    /// The zone is not in the table.
    #[error("unknown carbon zone '{0}': use a country ISO 3166 alpha-3 code (FRA, USA, DEU, ...) or a cloud region as provider:region (gcp:europe-west1, aws:us-east-1, azure:westeurope); `greentrain zones [FILTER]` lists them all (from crates/energy/data/zones.csv)")]
    UnknownZone(String),
}

fn file_err(path: &Path, line: Option<usize>, msg: impl Into<String>) -> CarbonError {
    CarbonError::File {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// A zone from the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// `country` or a cloud provider (`gcp`, `aws`, `azure`).
    pub kind: String,
    /// ISO alpha-3 or region code.
    pub code: String,
    /// Human-readable name.
    pub name: String,
    /// gCO2eq/kWh.
    pub g_per_kwh: f64,
    /// Year of the figure, when known.
    pub year: Option<u32>,
    /// Where the figure comes from.
    pub source: String,
}

/// All zones in the shipped table.
pub fn zones() -> Vec<Zone> {
    let mut r = csv::Reader::from_reader(ZONES_CSV.as_bytes());
    r.records()
        .filter_map(|rec| {
            let rec = rec.ok()?;
            Some(Zone {
                kind: rec.get(0)?.to_string(),
                code: rec.get(1)?.to_string(),
                name: rec.get(2)?.to_string(),
                g_per_kwh: rec.get(3)?.parse().ok()?,
                year: rec.get(4).and_then(|y| y.parse().ok()),
                source: rec.get(5)?.to_string(),
            })
        })
        .collect()
}

/// Looks up `FRA`, `fr` is not accepted (ISO alpha-3 only), or
/// `provider:region` such as `gcp:europe-west1`.
pub fn zone(code: &str) -> Result<Zone, CarbonError> {
    let (kind, c) = match code.split_once(':') {
        Some((p, r)) => (p.to_ascii_lowercase(), r.to_string()),
        None => ("country".to_string(), code.to_ascii_uppercase()),
    };
    zones()
        .into_iter()
        .find(|z| z.kind == kind && z.code.eq_ignore_ascii_case(&c))
        .ok_or_else(|| CarbonError::UnknownZone(code.to_string()))
}

/// A carbon intensity time series: each point's value holds until the next.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// (unix seconds, gCO2eq/kWh), sorted, strictly increasing.
    pub points: Vec<(f64, f64)>,
    /// Length of the last point's interval (the median step).
    pub step_s: f64,
    /// Where it came from.
    pub path: PathBuf,
    /// Format name.
    pub format: String,
}

/// Parses RFC 3339 / ISO 8601 UTC times: `2026-11-27T05:00:00Z`,
/// `2026-11-27T05:00Z`, `2026-11-27 05:00:00`, with optional fraction and
/// `+HH:MM` offset. Returns unix seconds.
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.len() < 16 {
        return None;
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    // `get`, not indexing: a non-ASCII byte must give None, not a panic.
    let mut rest = s.get(16..)?;
    let mut sec = 0.0;
    if let Some(r) = rest.strip_prefix(':') {
        let end = r
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(r.len());
        sec = r[..end].parse().ok()?;
        rest = &r[end..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &rest[1..];
            let part = |x: std::ops::Range<usize>| r.get(x)?.parse::<i64>().ok();
            let (oh, om) = if r.len() == 5 && r.as_bytes()[2] == b':' {
                (part(0..2)?, part(3..5)?)
            } else if r.len() == 4 {
                (part(0..2)?, part(2..4)?)
            } else {
                return None;
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 24
        || mi > 59
        || !(0.0..61.0).contains(&sec)
    {
        return None;
    }
    // days from civil (Howard Hinnant)
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86400 + h * 3600 + mi * 60 - offset) as f64 + sec)
}

/// Formats unix seconds as RFC 3339 UTC.
pub fn format_time(t: f64) -> String {
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Series {
    fn from_points(
        path: &Path,
        format: &str,
        mut pts: Vec<(f64, f64, usize)>,
    ) -> Result<Series, CarbonError> {
        if pts.is_empty() {
            return Err(file_err(path, None, "no data rows"));
        }
        for w in pts.windows(2) {
            if w[1].0 <= w[0].0 {
                return Err(file_err(
                    path,
                    Some(w[1].2),
                    format!(
                        "timestamp {} is not after the previous one ({}): rows must be sorted and unique",
                        format_time(w[1].0),
                        format_time(w[0].0)
                    ),
                ));
            }
        }
        for p in &pts {
            if !(p.1.is_finite() && p.1 >= 0.0) {
                return Err(file_err(
                    path,
                    Some(p.2),
                    format!("intensity {} is not a non-negative number", p.1),
                ));
            }
        }
        let mut steps: Vec<f64> = pts.windows(2).map(|w| w[1].0 - w[0].0).collect();
        steps.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let step_s = steps.get(steps.len() / 2).copied().unwrap_or(3600.0);
        Ok(Series {
            points: pts.drain(..).map(|(t, g, _)| (t, g)).collect(),
            step_s,
            path: path.to_path_buf(),
            format: format.to_string(),
        })
    }

    /// Reads any supported format, chosen by content.
    pub fn load(path: &Path) -> Result<Series, CarbonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_err(path, None, format!("cannot read: {e}")))?;
        let text = text.trim_start_matches('\u{feff}');
        if text.trim_start().starts_with('{') {
            Self::parse_uk_json(path, text)
        } else {
            Self::parse_csv(path, text)
        }
    }

    /// Electricity Maps CSV export (either header spelling; the direct
    /// column) or a plain `timestamp,g_per_kwh` CSV.
    pub fn parse_csv(path: &Path, text: &str) -> Result<Series, CarbonError> {
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = r
            .headers()
            .map_err(|e| file_err(path, Some(1), e.to_string()))?
            .clone();
        let find = |names: &[&str]| {
            headers
                .iter()
                .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
        };
        let (tcol, gcol, format) = if let Some(g) = find(&[
            "Carbon Intensity gCO₂eq/kWh (direct)",
            "Carbon intensity gCO₂eq/kWh (direct)",
        ]) {
            let t = find(&["Datetime (UTC)", "datetime"]).ok_or_else(|| {
                file_err(
                    path,
                    Some(1),
                    "Electricity Maps export without a 'Datetime (UTC)' column",
                )
            })?;
            (t, g, "electricity-maps")
        } else if let (Some(t), Some(g)) = (find(&["timestamp"]), find(&["g_per_kwh"])) {
            (t, g, "timestamp,g_per_kwh")
        } else {
            return Err(file_err(
                path,
                Some(1),
                format!(
                    "missing column: expected 'timestamp,g_per_kwh' or an Electricity Maps export with 'Datetime (UTC)' and 'Carbon Intensity gCO₂eq/kWh (direct)'; found {:?}",
                    headers.iter().collect::<Vec<_>>()
                ),
            ));
        };
        let mut pts = Vec::new();
        for (i, rec) in r.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(|e| file_err(path, Some(line), e.to_string()))?;
            let ts = rec.get(tcol).unwrap_or("");
            let t = parse_time(ts).ok_or_else(|| {
                file_err(
                    path,
                    Some(line),
                    format!("bad timestamp '{ts}' (expected RFC 3339 UTC)"),
                )
            })?;
            let gs = rec.get(gcol).unwrap_or("").trim();
            let g: f64 = gs
                .parse()
                .map_err(|_| file_err(path, Some(line), format!("bad intensity '{gs}'")))?;
            pts.push((t, g, line));
        }
        Self::from_points(path, format, pts)
    }

    /// The UK Carbon Intensity API's JSON (`{"data":[{"from","to",
    /// "intensity":{"forecast","actual"}}]}`, national or regional).
    pub fn parse_uk_json(path: &Path, text: &str) -> Result<Series, CarbonError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| file_err(path, Some(e.line()), e.to_string()))?;
        let mut items: Vec<&serde_json::Value> = Vec::new();
        fn collect<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
                serde_json::Value::Object(o)
                    if o.contains_key("intensity") && o.contains_key("from") =>
                {
                    out.push(v)
                }
                serde_json::Value::Object(o) => {
                    if let Some(d) = o.get("data") {
                        collect(d, out)
                    }
                }
                _ => {}
            }
        }
        collect(&v, &mut items);
        if items.is_empty() {
            return Err(file_err(
                path,
                None,
                "missing column: no 'data' entries with 'from' and 'intensity'",
            ));
        }
        let mut pts = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let from = it["from"].as_str().unwrap_or("");
            let t = parse_time(from).ok_or_else(|| {
                file_err(
                    path,
                    None,
                    format!("entry {}: bad timestamp '{from}'", i + 1),
                )
            })?;
            let g = it["intensity"]["actual"]
                .as_f64()
                .or_else(|| it["intensity"]["forecast"].as_f64())
                .ok_or_else(|| {
                    file_err(
                        path,
                        None,
                        format!("entry {}: no actual or forecast intensity", i + 1),
                    )
                })?;
            pts.push((t, g, i + 1));
        }
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        Self::from_points(path, "uk-carbon-intensity-json", pts)
    }

    /// Intensity at unix time `t` (the value of the interval holding it;
    /// before the first point, the first value; after the last, the last).
    pub fn at(&self, t: f64) -> f64 {
        match self
            .points
            .binary_search_by(|p| p.0.partial_cmp(&t).unwrap())
        {
            Ok(i) => self.points[i].1,
            Err(0) => self.points[0].1,
            Err(i) => self.points[i - 1].1,
        }
    }

    /// Seconds of `[a, b]` not covered by the series: before its first
    /// point, after its last point's interval, or inside a [`Series::gaps`]
    /// hole (held at the value before it, so not a forecast).
    pub fn uncovered_s(&self, a: f64, b: f64) -> f64 {
        let first = self.points[0].0;
        let last = self.points.last().unwrap().0 + self.step_s;
        let holes: f64 = self
            .gaps()
            .map(|(g0, g1)| (g1.min(b) - g0.max(a)).max(0.0))
            .sum();
        (first - a).clamp(0.0, b - a) + (b - last).clamp(0.0, b - a) + holes
    }

    /// Holes in the file: where two rows are more than [`GAP_STEPS`] usual
    /// steps apart, the time from the earlier row's usual interval to the
    /// next row. A 10 g/kWh row followed by 12 missing hours is not 12
    /// hours at 10 g/kWh.
    pub fn gaps(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let step = self.step_s;
        self.points
            .windows(2)
            .filter(move |w| w[1].0 - w[0].0 > GAP_STEPS * step)
            .map(move |w| (w[0].0 + step, w[1].0))
    }
}

/// Rows further apart than this many of the file's usual (median) steps
/// leave a hole ([`Series::gaps`]).
pub const GAP_STEPS: f64 = 3.0;

/// The intensity a run uses.
#[derive(Clone, Debug, PartialEq)]
pub enum Intensity {
    /// `[carbon] intensity_g_per_kwh`.
    Constant(f64),
    /// `[carbon] intensity_file`.
    Series(Series),
    /// `[carbon] zone`.
    Zone(Zone),
    /// Nothing configured: 475 g/kWh (IEA 2019).
    WorldDefault,
}

/// What the record says about carbon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarbonRecord {
    /// Energy-weighted mean intensity, gCO2eq/kWh.
    pub intensity_g_per_kwh: f64,
    /// `constant`, `file:<format>`, `zone:<code>`, `world_default`.
    pub source: String,
    /// Year or time range of the figure, and the file or table it came from.
    pub source_detail: String,
    /// Power usage effectiveness applied.
    pub pue: f64,
    /// Operational emissions, gCO2eq.
    pub co2_g: f64,
    /// Seconds of the run the intensity file did not cover (held at its
    /// nearest value), when a file was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncovered_s: Option<f64>,
    /// True when the world average was used because nothing was configured.
    #[serde(default)]
    pub is_default: bool,
}

impl Intensity {
    /// Resolves the config's choice, in the documented order.
    pub fn resolve(
        constant: Option<f64>,
        file: Option<&Path>,
        zone_code: Option<&str>,
    ) -> Result<Intensity, CarbonError> {
        if let Some(g) = constant {
            return Ok(Intensity::Constant(g));
        }
        if let Some(f) = file {
            return Ok(Intensity::Series(Series::load(f)?));
        }
        if let Some(z) = zone_code {
            return Ok(Intensity::Zone(zone(z)?));
        }
        Ok(Intensity::WorldDefault)
    }

    /// Emissions of an energy timeline (`(unix s, cumulative J)`), each
    /// interval's energy times the intensity at its midpoint, times PUE.
    pub fn account(&self, timeline: &[(f64, f64)], pue: f64) -> CarbonRecord {
        let kwh = |j: f64| j / 3.6e6;
        let total_j = timeline.last().map_or(0.0, |p| p.1) - timeline.first().map_or(0.0, |p| p.1);
        let (g, source, detail, uncovered, default) = match self {
            Intensity::Constant(c) => (kwh(total_j) * c, "constant".to_string(), "config [carbon] intensity_g_per_kwh".to_string(), None, false),
            Intensity::Zone(z) => (
                kwh(total_j) * z.g_per_kwh,
                format!("zone:{}", if z.kind == "country" { z.code.clone() } else { format!("{}:{}", z.kind, z.code) }),
                format!(
                    "{} {}{}, {}",
                    z.name,
                    z.g_per_kwh,
                    z.year.map(|y| format!(" g/kWh ({y})")).unwrap_or_else(|| " g/kWh".into()),
                    z.source
                ),
                None,
                false,
            ),
            Intensity::WorldDefault => (
                kwh(total_j) * WORLD_G_PER_KWH,
                "world_default".to_string(),
                "world average 475 g/kWh (IEA 2019); set [carbon] zone, intensity_g_per_kwh or intensity_file".to_string(),
                None,
                true,
            ),
            Intensity::Series(s) => {
                let mut g = 0.0;
                for w in timeline.windows(2) {
                    let e = w[1].1 - w[0].1;
                    g += kwh(e) * s.at(0.5 * (w[0].0 + w[1].0));
                }
                let (a, b) = (
                    timeline.first().map_or(0.0, |p| p.0),
                    timeline.last().map_or(0.0, |p| p.0),
                );
                let detail = format!(
                    "{} ({}), {} to {}",
                    s.path.display(),
                    s.format,
                    format_time(s.points[0].0),
                    format_time(s.points.last().unwrap().0 + s.step_s)
                );
                (g, format!("file:{}", s.format), detail, Some(s.uncovered_s(a, b)), false)
            }
        };
        let co2_g = g * pue;
        let intensity = match self {
            Intensity::Series(_) if total_j > 0.0 => g / kwh(total_j),
            _ => self.nominal(),
        };
        CarbonRecord {
            intensity_g_per_kwh: intensity,
            source,
            source_detail: detail,
            pue,
            co2_g,
            uncovered_s: uncovered,
            is_default: default,
        }
    }

    /// A single representative intensity (for predictions).
    pub fn nominal(&self) -> f64 {
        match self {
            Intensity::Constant(c) => *c,
            Intensity::Zone(z) => z.g_per_kwh,
            Intensity::WorldDefault => WORLD_G_PER_KWH,
            Intensity::Series(s) => {
                s.points.iter().map(|p| p.1).sum::<f64>() / s.points.len() as f64
            }
        }
    }
}

/// Software Carbon Intensity (Green Software Foundation): (E x I + M) / R,
/// in gCO2eq per functional unit (here: per training sample).
pub fn sci(operational_g: f64, embodied_g: f64, units: f64) -> Option<f64> {
    (units > 0.0).then(|| (operational_g + embodied_g) / units)
}
