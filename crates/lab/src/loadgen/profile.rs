//! Named load profiles (smoke, load, stress, spike, soak): the files in
//! `loadtests/profiles/`, built into the binary so `--profile smoke` works anywhere, and
//! any copy of them a user edits (`--profile my-profile.toml`).

use std::path::Path;

use serde::Deserialize;

use super::schedule::{Pace, Stage};

/// The profiles shipped in `loadtests/profiles/`, by name.
pub(crate) const BUILT_IN: [(&str, &str); 5] = [
    (
        "smoke",
        include_str!("../../../../loadtests/profiles/smoke.toml"),
    ),
    (
        "load",
        include_str!("../../../../loadtests/profiles/load.toml"),
    ),
    (
        "stress",
        include_str!("../../../../loadtests/profiles/stress.toml"),
    ),
    (
        "spike",
        include_str!("../../../../loadtests/profiles/spike.toml"),
    ),
    (
        "soak",
        include_str!("../../../../loadtests/profiles/soak.toml"),
    ),
];

/// A profile file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    /// One line saying what it is for.
    pub description: String,
    /// Events/s at time 0.
    #[serde(default)]
    pub start_rate: f64,
    /// The ramps, in `--stage` syntax (`30s:1000`).
    pub stages: Vec<String>,
}

impl Profile {
    /// A built-in profile by name, or a profile file by path.
    pub(crate) fn load(name_or_path: &str) -> anyhow::Result<Profile> {
        let (origin, text) = match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            Some((name, text)) => (format!("profile {name}"), text.to_string()),
            None if Path::new(name_or_path).exists() => (
                name_or_path.to_string(),
                std::fs::read_to_string(name_or_path)?,
            ),
            None => anyhow::bail!(
                "no profile {name_or_path:?}: use one of {} or a profile file's path",
                BUILT_IN.map(|(n, _)| n).join(", ")
            ),
        };
        let profile: Profile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        profile
            .pace(1.0)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(profile)
    }

    /// Its offered-load curve with every rate multiplied by `scale`.
    pub(crate) fn pace(&self, scale: f64) -> Result<Pace, String> {
        let stages = self
            .stages
            .iter()
            .map(|s| {
                s.parse::<Stage>().map(|st| Stage {
                    target: st.target * scale,
                    ..st
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pace::Stages {
            start: self.start_rate * scale,
            stages,
        })
    }
}

/// The built-in profiles, one line each, for `sluice loadgen --help`.
pub fn help() -> String {
    let mut out = String::from("Profiles (--profile NAME; rates in events/s, × --scale):\n");
    for (name, _) in BUILT_IN {
        let p = Profile::load(name).expect("built-in profiles parse (tested)");
        out.push_str(&format!(
            "  {name:<7} {}\n          start {} → {}\n",
            p.description,
            p.start_rate,
            p.stages.join(" → ")
        ));
    }
    out.push_str("Copy one from loadtests/profiles/ and pass its path to change it.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::schedule::Schedule;

    #[test]
    fn every_built_in_profile_loads_and_offers_events() {
        for (name, _) in BUILT_IN {
            let p = Profile::load(name).unwrap();
            let schedule = Schedule::new(&p.pace(1.0).unwrap(), None, None).unwrap();
            assert!(schedule.total().unwrap() > 0, "{name}");
        }
        assert!(help().contains("spike"));
    }

    #[test]
    fn scale_multiplies_the_rates() {
        let p = Profile::load("smoke").unwrap();
        let one = Schedule::new(&p.pace(1.0).unwrap(), None, None).unwrap();
        let ten = Schedule::new(&p.pace(10.0).unwrap(), None, None).unwrap();
        assert_eq!(ten.total().unwrap(), one.total().unwrap() * 10);
    }

    #[test]
    fn an_unknown_profile_names_the_choices() {
        let err = Profile::load("nope").unwrap_err().to_string();
        assert!(err.contains("smoke") && err.contains("soak"), "{err}");
    }
}
