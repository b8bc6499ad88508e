//! Capacity arithmetic: what a user profile costs per day, and what the measured rate allows.
//!
//! Pure functions of the profile and the measurement, so the figures in the report can be checked
//! by hand (the reference: 12 000 users × 2 files/h × 100 KB × 8 h = 19.2 GB per day).
//! Decimal units throughout: 1 KB = 1000 bytes, 1 GB = 10^9 bytes.

use serde::Serialize;

/// Bytes in a decimal gigabyte.
pub const GB: f64 = 1e9;

/// The user population being planned for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Profile {
    pub users: u64,
    /// Uploads per user per active hour.
    pub files_per_hour: f64,
    /// Mean upload size in bytes.
    pub mean_size_bytes: u64,
    /// Active hours in a day (the reference counts an 8-hour working day).
    pub hours_per_day: f64,
    /// Downloads of each upload (recipients; group chats fan out).
    pub downloads_per_upload: f64,
    /// Days files are kept on the file server.
    pub retention_days: f64,
}

/// What the profile amounts to, independent of any measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProfileLoad {
    pub uploads_per_s: f64,
    pub downloads_per_s: f64,
    pub files_per_day: f64,
    pub gb_per_day: f64,
    pub downloads_per_day: f64,
    /// File server space for `retention_days` of uploads, in GB.
    pub retention_gb: f64,
}

impl Profile {
    pub fn load(&self) -> ProfileLoad {
        let uploads_per_s = self.users as f64 * self.files_per_hour / 3600.0;
        let files_per_day = self.users as f64 * self.files_per_hour * self.hours_per_day;
        let gb_per_day = files_per_day * self.mean_size_bytes as f64 / GB;
        ProfileLoad {
            uploads_per_s,
            downloads_per_s: uploads_per_s * self.downloads_per_upload,
            files_per_day,
            gb_per_day,
            downloads_per_day: files_per_day * self.downloads_per_upload,
            retention_gb: gb_per_day * self.retention_days,
        }
    }
}

/// How the node coped with the offered load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every arrival uploaded, no errors, p99 within target: capacity is at least the held rate.
    KeptUp,
    /// Every arrival uploaded without errors, but p99 over target: queues are building, the node
    /// is close to saturation.
    LatencyOverTarget,
    /// Errors or arrivals not uploaded: the node saturated; the held rate is about its ceiling.
    FellBehind,
}

impl Verdict {
    pub fn judge(errors: u64, uploaded: u64, planned: u64, p99_ms: f64, target_ms: f64) -> Self {
        if errors > 0 || uploaded < planned {
            Verdict::FellBehind
        } else if p99_ms > target_ms {
            Verdict::LatencyOverTarget
        } else {
            Verdict::KeptUp
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            Verdict::KeptUp => {
                "kept up: capacity is at least this; raise --speedup to find the ceiling"
            }
            Verdict::LatencyOverTarget => {
                "held the rate but p99 is over target: close to saturation; lower --speedup for the rate within target"
            }
            Verdict::FellBehind => {
                "fell behind: saturated, this is about the node's ceiling for this mix"
            }
        }
    }
}

/// The profile set against what the node held in a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Projection {
    pub profile: Profile,
    pub profile_load: ProfileLoad,
    /// The rate the run offered (the profile rate times the speedup).
    pub offered_uploads_per_s: f64,
    /// Successful uploads per second over the run.
    pub held_uploads_per_s: f64,
    /// Held rate over the profile rate: how many times the profile the node carried.
    pub headroom: f64,
    /// Users of this profile the held rate serves.
    pub users_at_held_rate: f64,
    pub files_per_day_at_held_rate: f64,
    pub gb_per_day_at_held_rate: f64,
    /// File server space for `retention_days` at the held rate, in GB.
    pub retention_gb_at_held_rate: f64,
    pub verdict: Verdict,
    /// `verdict == KeptUp`: the held rate is a lower bound on capacity.
    pub kept_up: bool,
}

impl Projection {
    pub fn new(
        profile: Profile,
        offered_uploads_per_s: f64,
        held_uploads_per_s: f64,
        verdict: Verdict,
    ) -> Self {
        let profile_load = profile.load();
        let headroom = if profile_load.uploads_per_s > 0.0 {
            held_uploads_per_s / profile_load.uploads_per_s
        } else {
            0.0
        };
        let files_per_day_at_held_rate = held_uploads_per_s * 3600.0 * profile.hours_per_day;
        let gb_per_day_at_held_rate =
            files_per_day_at_held_rate * profile.mean_size_bytes as f64 / GB;
        let users_at_held_rate = if profile.files_per_hour > 0.0 {
            held_uploads_per_s * 3600.0 / profile.files_per_hour
        } else {
            0.0
        };
        Projection {
            profile,
            profile_load,
            offered_uploads_per_s,
            held_uploads_per_s,
            headroom,
            users_at_held_rate,
            files_per_day_at_held_rate,
            gb_per_day_at_held_rate,
            retention_gb_at_held_rate: gb_per_day_at_held_rate * profile.retention_days,
            verdict,
            kept_up: verdict == Verdict::KeptUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Profile {
        Profile {
            users: 12_000,
            files_per_hour: 2.0,
            mean_size_bytes: 100_000,
            hours_per_day: 8.0,
            downloads_per_upload: 1.0,
            retention_days: 30.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn reference_profile_is_19_2_gb_per_day() {
        let load = reference().load();
        assert!(close(load.files_per_day, 192_000.0));
        assert!(close(load.gb_per_day, 19.2), "{}", load.gb_per_day);
        assert!(close(load.uploads_per_s, 12_000.0 * 2.0 / 3600.0));
        assert!(close(load.downloads_per_day, 192_000.0));
        assert!(close(load.retention_gb, 576.0));
    }

    #[test]
    fn reference_sped_up_100x_is_about_667_uploads_per_s() {
        let load = reference().load();
        assert!(close(load.uploads_per_s * 100.0, 666.666_666_666_666_6));
    }

    #[test]
    fn headroom_and_capacity_at_the_held_rate() {
        let p = Projection::new(reference(), 666.0, 200.0, Verdict::FellBehind);
        // 200 / 6.666… = 30 times the profile.
        assert!(close(p.headroom, 30.0), "{}", p.headroom);
        assert!(close(p.users_at_held_rate, 360_000.0));
        assert!(close(p.files_per_day_at_held_rate, 5_760_000.0));
        assert!(close(p.gb_per_day_at_held_rate, 576.0));
        assert!(close(p.retention_gb_at_held_rate, 17_280.0));
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::judge(0, 10, 10, 50.0, 100.0), Verdict::KeptUp);
        assert_eq!(
            Verdict::judge(0, 10, 10, 150.0, 100.0),
            Verdict::LatencyOverTarget
        );
        assert_eq!(Verdict::judge(1, 10, 10, 50.0, 100.0), Verdict::FellBehind);
        assert_eq!(Verdict::judge(0, 9, 10, 50.0, 100.0), Verdict::FellBehind);
    }

    #[test]
    fn downloads_scale_with_fan_out() {
        let mut prof = reference();
        prof.downloads_per_upload = 5.0;
        let load = prof.load();
        assert!(close(load.downloads_per_day, 960_000.0));
        assert!(close(load.downloads_per_s, load.uploads_per_s * 5.0));
    }

    #[test]
    fn empty_profile_has_no_headroom_instead_of_dividing_by_zero() {
        let mut prof = reference();
        prof.users = 0;
        let p = Projection::new(prof, 0.0, 10.0, Verdict::KeptUp);
        assert_eq!(p.headroom, 0.0);
    }
}
