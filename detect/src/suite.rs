//! The validated detection suite: every signature's spec from the `[detect]` config, and the
//! detectors made from them.

use schemas::Signature;

use crate::adaptive::BaselineSpec;
use crate::config::{DebounceConfig, DetectConfig, Seasonality};
use crate::error::{Error, Result};
use crate::incident::Debounce;
use crate::signatures::SignatureDetector;
use crate::signatures::black_hole::BlackHoleSpec;
use crate::signatures::cross_zone::{CrossZone, CrossZoneSpec};
use crate::signatures::deploy::{DeployRegression, DeploySpec};
use crate::signatures::generic::{Anomalies, AnomalySpec};
use crate::signatures::root_cause::{RootCause, RootCauseSpec};
use crate::signatures::segmentation::{Segmentation, SegmentationSpec};
use crate::signatures::storm::{Storm, StormSpec};

/// Every signature's validated spec (`None`: disabled), built with
/// `Suite::try_from(&DetectConfig)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// Baselines of the store.
    pub baseline: BaselineSpec,
    /// Black hole (always on).
    pub black_hole: BlackHoleSpec,
    /// Generic per-signal anomalies.
    pub anomaly: Option<(AnomalySpec, Debounce)>,
    /// Deployment regressions.
    pub deploy: Option<(DeploySpec, Debounce)>,
    /// Synchronized bursts.
    pub storm: Option<(StormSpec, Debounce)>,
    /// Segmentation, never-seen edges, fan-in surges.
    pub segmentation: Option<(SegmentationSpec, Debounce)>,
    /// Cross-zone traffic.
    pub cross_zone: Option<(CrossZoneSpec, Debounce)>,
    /// Root-cause hints.
    pub root_cause: Option<(RootCauseSpec, Debounce)>,
}

fn debounce(c: DebounceConfig, key: &'static str) -> Result<Debounce> {
    Debounce {
        open_after: c.open_after,
        of_windows: c.of_windows,
        resolve_after: c.resolve_after,
    }
    .validate(key)
}

/// A probability in (0, 0.5) for `key`.
pub(crate) fn tail(p: f64, key: &'static str) -> Result<f64> {
    if p.is_finite() && p > 0.0 && p < 0.5 {
        Ok(p)
    } else {
        Err(Error::Config {
            key,
            reason: format!("{p} is not a tail probability in (0, 0.5)"),
        })
    }
}

/// A factor ≥ 1 for `key`.
pub(crate) fn factor(f: f64, key: &'static str) -> Result<f64> {
    if f.is_finite() && f >= 1.0 {
        Ok(f)
    } else {
        Err(Error::Config {
            key,
            reason: format!("{f} is not a factor >= 1"),
        })
    }
}

impl TryFrom<&DetectConfig> for Suite {
    type Error = Error;

    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    fn try_from(c: &DetectConfig) -> Result<Self> {
        let b = &c.baseline;
        if b.warm_up < 3 {
            return Err(Error::Config {
                key: "baseline.warm-up",
                reason: format!("{} is fewer than 3 windows", b.warm_up),
            });
        }
        if !(b.half_life.is_finite() && b.half_life >= 1.0) {
            return Err(Error::Config {
                key: "baseline.half-life",
                reason: format!("{} is not a number of windows >= 1", b.half_life),
            });
        }
        let window_us = i64::try_from(c.window.length.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let baseline = BaselineSpec {
            warm_up: b.warm_up,
            confident_after: b.confident_after.max(b.warm_up),
            half_life: b.half_life,
            season: match b.seasonality {
                Seasonality::None => None,
                Seasonality::Daily => Some((86_400_000_000, 24)),
            },
            ..BaselineSpec::default()
        };
        let on = |enabled: bool| enabled;
        Ok(Suite {
            baseline,
            black_hole: BlackHoleSpec::try_from(&c.black_hole)?,
            anomaly: on(c.anomaly.enabled)
                .then(|| {
                    Ok::<_, Error>((
                        AnomalySpec::try_from(&c.anomaly)?,
                        debounce(c.anomaly.debounce, "anomaly.debounce")?,
                    ))
                })
                .transpose()?,
            deploy: on(c.deploy.enabled)
                .then(|| {
                    Ok::<_, Error>((
                        DeploySpec::new(&c.deploy, window_us)?,
                        debounce(c.deploy.debounce, "deploy.debounce")?,
                    ))
                })
                .transpose()?,
            storm: on(c.storm.enabled)
                .then(|| {
                    Ok::<_, Error>((
                        StormSpec::new(&c.storm, window_us)?,
                        debounce(c.storm.debounce, "storm.debounce")?,
                    ))
                })
                .transpose()?,
            segmentation: on(c.segmentation.enabled)
                .then(|| {
                    Ok::<_, Error>((
                        SegmentationSpec::try_from(&c.segmentation)?,
                        debounce(c.segmentation.debounce, "segmentation.debounce")?,
                    ))
                })
                .transpose()?,
            cross_zone: on(c.cross_zone.enabled)
                .then(|| {
                    Ok::<_, Error>((
                        CrossZoneSpec::new(&c.cross_zone, window_us)?,
                        debounce(c.cross_zone.debounce, "cross-zone.debounce")?,
                    ))
                })
                .transpose()?,
            root_cause: on(c.root_cause.enabled)
                .then(|| {
                    Ok::<_, Error>((
                        RootCauseSpec::try_from(&c.root_cause)?,
                        debounce(c.root_cause.debounce, "root-cause.debounce")?,
                    ))
                })
                .transpose()?,
        })
    }
}

impl Suite {
    /// Adds deployments learned while running to the deploy detector's history (see
    /// [`DeploySpec::add_deployments`]); returns how many were new (0 with the detector off).
    pub fn add_deployments(
        &mut self,
        events: &[crate::signatures::deploy::DeploymentEvent],
    ) -> usize {
        match &mut self.deploy {
            Some((spec, _)) => spec.add_deployments(events),
            None => 0,
        }
    }

    /// The enabled detectors but the black hole (which the engine keeps apart), in a fixed
    /// order.
    pub fn detectors(&self) -> Vec<Box<dyn SignatureDetector>> {
        let mut v: Vec<Box<dyn SignatureDetector>> = Vec::new();
        if let Some((s, _)) = &self.anomaly {
            v.push(Box::new(Anomalies::new(s.clone())));
        }
        if let Some((s, _)) = &self.deploy {
            v.push(Box::new(DeployRegression::new(s.clone())));
        }
        if let Some((s, _)) = &self.storm {
            v.push(Box::new(Storm::new(s.clone())));
        }
        if let Some((s, _)) = &self.segmentation {
            v.push(Box::new(Segmentation::new(s.clone())));
        }
        if let Some((s, _)) = &self.cross_zone {
            v.push(Box::new(CrossZone::new(s.clone())));
        }
        if let Some((s, _)) = &self.root_cause {
            v.push(Box::new(RootCause::new(s.clone())));
        }
        v
    }

    /// When `signature`'s raw findings become findings.
    pub fn debounce(&self, signature: Signature) -> Debounce {
        fn d<T>(o: &Option<(T, Debounce)>) -> Debounce {
            o.as_ref().map_or(Debounce::IMMEDIATE, |x| x.1)
        }
        match signature {
            Signature::RateDrop
            | Signature::RateSpike
            | Signature::LatencyShift
            | Signature::ErrorSpike
            | Signature::Queueing => d(&self.anomaly),
            Signature::DeployRegression => d(&self.deploy),
            Signature::SynchronizedBurst => d(&self.storm),
            Signature::SegmentationViolation | Signature::FanInSurge | Signature::FanOutSurge => {
                d(&self.segmentation)
            }
            Signature::CrossZone => d(&self.cross_zone),
            Signature::SpreadingDegradation => d(&self.root_cause),
            _ => Debounce::IMMEDIATE,
        }
    }
}

impl Default for Suite {
    fn default() -> Self {
        Suite::try_from(&DetectConfig::default()).expect("the default config is valid")
    }
}
