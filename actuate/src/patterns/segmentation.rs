//! Segmentation: deny the edges a finding shows crossing a boundary.
//!
//! The remedy for a segmentation breach (MISSION.md, example 4: clients of one room reaching
//! another room's relays): requests from the offending sources to the services they reached
//! are refused with `status` (default 403). The target is the finding's sources and the
//! services its related entities name as reached (`destination`), else its subject's
//! destination; a pair subject denies that one edge.
//!
//! Nothing for a node, a version, a zone pair or the landscape: denying every caller of a
//! node is an outage, not a segment.

use schemas::{Finding, Parameters, Pattern, SegmentationParameters, Subject};

use super::{OperationalPattern, Remedy, only, status, target_of};
use crate::config::PolicyConfig;
use crate::error::Result;

/// The segmentation pattern, validated from a policy rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    status: u16,
}

impl Segmentation {
    /// Validates `status` (100 to 599, default 403).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming `policy[index].<key>`.
    pub fn new(index: usize, rule: &PolicyConfig) -> Result<Self> {
        only(index, rule, &["status"])?;
        Ok(Segmentation {
            status: status(index, rule, 403)?,
        })
    }
}

impl OperationalPattern for Segmentation {
    fn pattern(&self) -> Pattern {
        Pattern::Segmentation
    }

    fn subject_kinds(&self) -> &'static [&'static str] {
        &["pair", "sources"]
    }

    fn remedy(&self, finding: &Finding) -> Option<Remedy> {
        if !matches!(
            finding.subject,
            Subject::Sources { .. } | Subject::Pair { .. }
        ) {
            return None;
        }
        let target = target_of(finding)?;
        if target.sources.is_empty() {
            return None;
        }
        Some(Remedy {
            target,
            parameters: Parameters::Segmentation(SegmentationParameters {
                status: self.status,
            }),
            baseline_rps: Default::default(),
        })
    }

    /// Every source and destination of both: a breach that spreads is denied as a whole.
    fn merge(&self, active: &Remedy, mut new: Remedy) -> Remedy {
        for (all, old) in [
            (&mut new.target.sources, &active.target.sources),
            (&mut new.target.destinations, &active.target.destinations),
        ] {
            all.extend(old.iter().cloned());
            all.sort();
            all.dedup();
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use schemas::Signature;

    use super::*;
    use crate::patterns::testing::{finding, related};

    #[test]
    fn denies_the_sources_toward_the_services_they_reached() {
        let seg = Segmentation::new(
            0,
            &PolicyConfig::new(Signature::SegmentationViolation, Pattern::Segmentation),
        )
        .unwrap();
        let mut f = finding(
            Signature::SegmentationViolation,
            Subject::Sources {
                destination: "room2".into(),
                sources: vec!["room1-client-2".into(), "room1-client-0".into()],
            },
        );
        f.related = vec![
            related("destination", "room2-relay-1"),
            related("destination", "room2-relay-0"),
        ];
        let r = seg.remedy(&f).unwrap();
        assert_eq!(r.target.sources, ["room1-client-0", "room1-client-2"]);
        assert_eq!(r.target.destinations, ["room2-relay-0", "room2-relay-1"]);
        assert_eq!(
            r.parameters,
            Parameters::Segmentation(SegmentationParameters { status: 403 })
        );
        // the breach spreads: the renewed command covers both
        let mut later = f.clone();
        later.subject = Subject::Sources {
            destination: "room2".into(),
            sources: vec!["room1-client-1".into()],
        };
        let merged = seg.merge(&r, seg.remedy(&later).unwrap());
        assert_eq!(
            merged.target.sources,
            ["room1-client-0", "room1-client-1", "room1-client-2"]
        );
        // a node's callers are not a segment
        let node = finding(
            Signature::SegmentationViolation,
            Subject::Node {
                node: "relay".into(),
            },
        );
        assert!(seg.remedy(&node).is_none());
    }
}
