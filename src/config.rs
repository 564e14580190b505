//! The config file (`--config FILE`, TOML): one section per stage.
//!
//! Every section and key is optional; unknown keys are errors that name the key. See
//! `deploy/examples/graywatch.toml` for every key with its unit and default.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// How log fields become source and destination services.
    #[serde(default)]
    pub mapping: ingest::MappingConfig,
    /// Windows, watermark and detector thresholds.
    #[serde(default)]
    pub detect: detect::DetectConfig,
    /// Operational patterns: what remediation commands look like.
    #[serde(default)]
    pub actuate: actuate::ActuateConfig,
}

/// The config after validation: what the pipeline runs with.
pub struct Validated {
    /// Service mapping for parsers.
    pub mapping: ingest::Mapping,
    /// The detection stage.
    pub detector: detect::Detector,
    /// The actuation stage.
    pub actuator: actuate::Actuator,
    /// The detection config as given (for the summary).
    pub detect: detect::DetectConfig,
}

impl Config {
    /// Reads and parses `path`; no file means all defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Validates every section into the runtime types; errors name `path` and the section.
    pub fn validate(self, path: Option<&Path>) -> anyhow::Result<Validated> {
        let file = path.map_or_else(|| "defaults".into(), |p| p.display().to_string());
        let detect_config = self.detect.clone();
        Ok(Validated {
            mapping: ingest::Mapping::try_from(self.mapping)
                .with_context(|| format!("config {file} [mapping]"))?,
            detector: detect::Detector::try_from(self.detect)
                .with_context(|| format!("config {file} [detect]"))?,
            actuator: actuate::Actuator::try_from(self.actuate)
                .with_context(|| format!("config {file} [actuate]"))?,
            detect: detect_config,
        })
    }
}
