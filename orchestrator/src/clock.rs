//! Incident time, in one place: parsing and formatting the incident clock
//! ("02:44", "+15m"), incident durations, and the mapping between incident
//! time and wall time by the time scale (a model: one incident hour lasts
//! 3600 / scale wall seconds).

use std::time::Duration;

/// The placeholder for a value that is not known.
pub const DASH: &str = "—";

/// The latest incident clock a scenario can name (48:00: the incident's day
/// and the next).
pub const MAX_CLOCK_SECS: u64 = 48 * 3600;

/// Incident seconds since 00:00 for "HH:MM", "HH:MM:SS" or "+<duration>"
/// (an offset from `start_secs`).
pub fn parse_when(s: &str, start_secs: u64) -> Result<u64, String> {
    if let Some(off) = s.strip_prefix('+') {
        return humantime::parse_duration(off)
            .map_err(|e| format!("{s:?}: {e} (an offset is like +15m or +1h30m)"))
            .and_then(|d| {
                start_secs
                    .checked_add(d.as_secs())
                    .filter(|t| *t < MAX_CLOCK_SECS)
                    .ok_or_else(|| format!("{s:?}: the offset ends past 48:00, the latest clock a scenario can hold"))
            });
    }
    let parts: Vec<&str> = s.split(':').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match (parts.len(), nums) {
        (2 | 3, Some(n)) if n[0] < 48 && n[1] < 60 && n.get(2).is_none_or(|x| *x < 60) => {
            Ok(n[0] * 3600 + n[1] * 60 + n.get(2).copied().unwrap_or(0))
        }
        _ => Err(format!(
            "{s:?} is not a clock time; use HH:MM or HH:MM:SS (e.g. \"02:44\") or an offset like \"+15m\""
        )),
    }
}

/// An incident duration ("30m", "1h30m"), with the key it came from in the error.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{key}: {s:?}: {e}"))
}

/// "HH:MM:SS" for incident seconds.
pub fn clock(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// "HH:MM" for incident seconds (hours may exceed 23: `26:10`); "—" when
/// not finite.
pub fn clock_hm(secs: f64) -> String {
    if !secs.is_finite() {
        return DASH.to_string();
    }
    let sign = if secs < 0.0 { "-" } else { "" };
    // A small epsilon so 03:29:59.9999 from float error still reads 03:30.
    let minutes = ((secs.abs() + 1e-6) / 60.0).floor() as u64;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Parses "HH:MM" or "HH:MM:SS" (hours may exceed 23, seconds may have a
/// fraction) into incident seconds; `None` when it is not a clock.
pub fn parse_clock(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let h: u64 = parts[0].trim().parse().ok()?;
    let m: u64 = parts[1].trim().parse().ok()?;
    if m >= 60 {
        return None;
    }
    let sec: f64 = match parts.get(2) {
        Some(p) => p
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| (0.0..60.0).contains(x))?,
        None => 0.0,
    };
    let whole = h.checked_mul(3600)?.checked_add(m * 60)?;
    Some(whole as f64 + sec)
}

/// `3h10m` style, from incident seconds (the blast-radius table).
pub fn short_duration(secs: f64) -> String {
    let m = (secs / 60.0).round() as u64;
    if m >= 60 {
        format!("{}h{:02}m", m / 60, m % 60)
    } else {
        format!("{m}m")
    }
}

/// `x` with at most `dec` decimals, trailing zeros trimmed ("20", "17.7").
pub fn fmt_num(x: f64, dec: usize) -> String {
    if !x.is_finite() {
        return DASH.to_string();
    }
    let mut s = format!("{x:.dec$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".to_string();
    }
    s
}

/// A wall offset as `+17.7s`.
pub fn fmt_wall(t: f64) -> String {
    if t.is_finite() {
        format!("+{}s", fmt_num(t, 1))
    } else {
        DASH.to_string()
    }
}

/// A duration in seconds for people: `10 s`, `6 min 14 s`, `3 h 12 min`.
pub fn long_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return DASH.to_string();
    }
    let neg = if secs < 0.0 { "-" } else { "" };
    let s = secs.abs();
    if s < 60.0 {
        return format!("{neg}{} s", fmt_num(s, 1));
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m, sec) {
        (0, m, 0) => format!("{neg}{m} min"),
        (0, m, s) => format!("{neg}{m} min {s} s"),
        (h, 0, _) => format!("{neg}{h} h"),
        (h, m, _) => format!("{neg}{h} h {m} min"),
    }
}

/// Rounds to one decimal (wall seconds in journals and reports).
pub fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The mapping between incident time and wall time of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IncidentClock {
    /// Incident seconds since 00:00 at wall offset 0.
    pub start: u64,
    /// Incident seconds per wall second.
    pub scale: f64,
}

impl IncidentClock {
    /// Incident seconds at wall offset `wall_s`.
    pub fn at(&self, wall_s: f64) -> u64 {
        self.start + (wall_s.max(0.0) * self.scale) as u64
    }

    /// "HH:MM:SS" at wall offset `wall_s`.
    pub fn clock_at(&self, wall_s: f64) -> String {
        clock(self.at(wall_s))
    }

    /// "HH:MM" at wall offset `wall_s` (the report's axis and tables): not
    /// clamped at 0 nor truncated to whole seconds first, so a tick on a
    /// minute never reads the minute before; "—" when `wall_s` is not finite.
    pub fn clock_hm_at(&self, wall_s: f64) -> String {
        clock_hm(self.start as f64 + wall_s * self.scale)
    }

    /// Wall offset at which the incident clock reads `incident_secs`.
    pub fn wall_of(&self, incident_secs: u64) -> Duration {
        wall_secs(incident_secs.saturating_sub(self.start) as f64 / self.scale)
    }

    /// An incident duration in wall time (to the millisecond).
    pub fn to_wall(&self, incident: Duration) -> Duration {
        to_wall(incident, self.scale)
    }
}

/// Wall seconds as a `Duration`, saturating instead of panicking when the
/// value is out of range (a scale is checked at parse time, so this only
/// guards arithmetic on extreme but valid inputs).
fn wall_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// An incident duration in wall time at `scale` (to the millisecond).
pub fn to_wall(incident: Duration, scale: f64) -> Duration {
    let wall = wall_secs(incident.as_secs_f64() / scale);
    Duration::from_millis(wall.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_offsets_parse_and_format_back() {
        assert_eq!(parse_when("02:44", 0), Ok(2 * 3600 + 44 * 60));
        assert_eq!(parse_when("+15m", 100), Ok(100 + 900));
        assert_eq!(parse_when("22:31:05", 0), Ok(22 * 3600 + 31 * 60 + 5));
        assert!(
            parse_when("25:99", 0)
                .expect_err("not a clock")
                .contains("HH:MM")
        );
        assert!(
            parse_when("+soon", 0)
                .expect_err("not an offset")
                .contains("+15m")
        );
        assert_eq!(clock(9000), "02:30:00");
        assert_eq!(clock_hm(26.0 * 3600.0 + 600.0), "26:10");
        assert_eq!(parse_clock("02:30"), Some(9000.0));
        assert_eq!(parse_clock("02:61"), None);
    }

    #[test]
    fn durations_read_for_people() {
        assert_eq!(short_duration(3.0 * 3600.0 + 600.0), "3h10m");
        assert_eq!(short_duration(240.0), "4m");
        assert_eq!(long_duration(10.0), "10 s");
        assert_eq!(long_duration(374.0), "6 min 14 s");
        assert_eq!(long_duration(3.0 * 3600.0 + 720.0), "3 h 12 min");
        assert_eq!(fmt_num(17.70, 2), "17.7");
        assert_eq!(fmt_wall(f64::NAN), DASH);
    }

    #[test]
    fn incident_and_wall_time_map_by_the_scale() {
        let c = IncidentClock {
            start: 9000,
            scale: 360.0,
        };
        assert_eq!(c.at(10.0), 9000 + 3600);
        assert_eq!(c.clock_at(2.5), "02:45:00");
        assert_eq!(c.clock_hm_at(10.0), "03:30");
        assert_eq!(c.clock_hm_at(17.7), "04:16");
        assert_eq!(c.clock_hm_at(f64::NAN), DASH);
        assert_eq!(c.wall_of(9000 + 3600), Duration::from_secs(10));
        assert_eq!(
            c.to_wall(Duration::from_secs(15 * 60)),
            Duration::from_millis(2500)
        );
    }
}
