//! Incidents: raw findings become findings only when they persist, so detection does not
//! flap.
//!
//! An incident is keyed by (signature, subject key); a user rule's by (rule, subject key). Each window, every tracked incident
//! learns whether its detector fired. An incident **opens** when it fired in at least
//! `open-after` of its last `of-windows` windows; while open, each window in which it fires
//! gives a finding. It **resolves** after `resolve-after` windows in a row without firing,
//! and is forgotten once its history is clean. With `open-after = of-windows = 1` every raw
//! finding is a finding.

use std::collections::BTreeMap;

use schemas::{Finding, Subject};
use serde::{Deserialize, Serialize};

/// When an incident opens and resolves (validated: 1 ≤ `open_after` ≤ `of_windows` ≤ 64,
/// `resolve_after` ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debounce {
    /// Windows (of the last `of_windows`) with a raw finding that open an incident.
    pub open_after: u32,
    /// The windows looked back on, count.
    pub of_windows: u32,
    /// Windows in a row without a raw finding that resolve an open incident.
    pub resolve_after: u32,
}

impl Debounce {
    /// Every raw finding is a finding; resolves after 3 quiet windows.
    pub const IMMEDIATE: Debounce = Debounce {
        open_after: 1,
        of_windows: 1,
        resolve_after: 3,
    };

    /// Checks the bounds, naming `section` in the error.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when a bound is out of range.
    pub fn validate(self, key: &'static str) -> crate::Result<Self> {
        if self.open_after == 0
            || self.open_after > self.of_windows
            || self.of_windows > 64
            || self.resolve_after == 0
        {
            return Err(crate::Error::Config {
                key,
                reason: format!(
                    "open-after {} of-windows {} resolve-after {}: need 1 <= open-after <= \
                     of-windows <= 64 and resolve-after >= 1",
                    self.open_after, self.of_windows, self.resolve_after
                ),
            });
        }
        Ok(self)
    }
}

/// One incident's recent history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct History {
    /// Bit i: fired i windows ago (bit 0: the last window judged).
    fired: u64,
    open: bool,
    /// Windows in a row without firing.
    quiet: u32,
    /// `resolve-after` of the rule it last fired with.
    resolve_after: u32,
    /// `of-windows` of the rule it last fired with.
    of_windows: u32,
    /// What it is about (for the learning gate: an open incident's subject teaches no
    /// baseline, even in a window where it did not fire); `None` for a user rule's, whose
    /// findings never keep a baseline from learning.
    #[serde(default)]
    subject: Option<Subject>,
}

/// The low `n` bits.
fn mask(n: u32) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// The incidents of every signature (plain data, checkpointed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incidents {
    /// By signature name then subject key.
    by_key: BTreeMap<(String, String), History>,
}

impl Incidents {
    /// Incidents tracked (open or with recent raw findings).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Open incidents.
    pub fn open(&self) -> usize {
        self.by_key.values().filter(|h| h.open).count()
    }

    /// Whether the incident `key` (see [`Incidents::key`]) is open.
    pub fn is_open(&self, key: &(String, String)) -> bool {
        self.by_key.get(key).is_some_and(|h| h.open)
    }

    /// A finding's incident: its signature and subject key (for a user rule, `rule/<name>`
    /// and the subject key, so two rules on one subject are two incidents).
    pub fn key(f: &Finding) -> (String, String) {
        key(f)
    }

    /// The subjects of open incidents.
    pub fn open_subjects(&self) -> impl Iterator<Item = &Subject> {
        self.by_key
            .values()
            .filter(|h| h.open)
            .filter_map(|h| h.subject.as_ref())
    }

    /// One window: `raw` are the raw findings of every detector (several for one incident
    /// count once), `debounce` gives each signature's rule. Returns the findings of open
    /// incidents, in `raw`'s order.
    pub fn step(
        &mut self,
        raw: Vec<Finding>,
        debounce: impl Fn(&Finding) -> Debounce,
    ) -> Vec<Finding> {
        let mut fired: BTreeMap<(String, String), (Debounce, Option<&Subject>)> = BTreeMap::new();
        for f in &raw {
            let subject = f.rule.is_none().then_some(&f.subject);
            fired.insert(key(f), (debounce(f), subject));
        }
        // every tracked incident moves one window on
        let mut opened = std::collections::BTreeSet::new();
        self.by_key.retain(|key, h| {
            h.fired = (h.fired << 1) & mask(h.of_windows);
            if fired.contains_key(key) {
                return true;
            }
            h.quiet += 1;
            true
        });
        for (key, (d, subject)) in &fired {
            let h = self.by_key.entry(key.clone()).or_default();
            h.fired |= 1;
            h.quiet = 0;
            if h.subject.as_ref() != *subject {
                h.subject = subject.cloned();
            }
            h.resolve_after = d.resolve_after;
            h.of_windows = d.of_windows;
            if !h.open && (h.fired & mask(d.of_windows)).count_ones() >= d.open_after {
                h.open = true;
            }
            if h.open {
                opened.insert(key.clone());
            }
        }
        self.by_key.retain(|_, h| {
            if h.open && h.quiet >= h.resolve_after.max(1) {
                h.open = false;
            }
            h.open || h.fired != 0
        });
        // `fired` borrows `raw`'s subjects
        drop(fired);
        raw.into_iter()
            .filter(|f| opened.contains(&key(f)))
            .collect()
    }
}

/// A finding's incident: its signature and subject key (for a user rule, `rule/<name>` and
/// the subject key, so two rules on one subject are two incidents).
fn key(f: &Finding) -> (String, String) {
    match &f.rule {
        Some(rule) => (format!("{}/{rule}", f.signature.as_str()), f.subject.key()),
        None => (f.signature.as_str().to_owned(), f.subject.key()),
    }
}

#[cfg(test)]
mod tests {
    use schemas::{Severity, Signature, Subject, Window};

    use super::*;

    fn raw(node: &str, k: i64) -> Finding {
        crate::signatures::finding(
            Signature::BlackHole,
            Subject::Node { node: node.into() },
            Window {
                start_us: k * 10,
                end_us: (k + 1) * 10,
            },
            Severity::Warning,
            vec![],
            vec![],
            schemas::Confidence::Normal,
            String::new(),
        )
    }

    #[test]
    fn an_incident_opens_after_k_of_n_and_resolves_after_m_quiet_windows() {
        let rule = Debounce {
            open_after: 2,
            of_windows: 3,
            resolve_after: 2,
        };
        let mut i = Incidents::default();
        // fires in windows 0, 2, 3, 6 (quiet 4, 5 resolve it), 7
        let fires = [true, false, true, true, false, false, true, true];
        let mut out = Vec::new();
        for (k, &f) in fires.iter().enumerate() {
            let raws = if f {
                vec![raw("api", k as i64)]
            } else {
                vec![]
            };
            out.push(i.step(raws, |_| rule).len());
        }
        // window 0: 1 of 3; window 2: 2 of 3 (0 and 2) → open; 3 open; 4, 5 quiet → resolved
        // after 5; 6: 1 of 3 (4, 5, 6) → not open; 7: 2 of 3 → open again
        assert_eq!(out, [0, 0, 1, 1, 0, 0, 0, 1]);
        assert_eq!(i.open(), 1);
        let open: Vec<&Subject> = i.open_subjects().collect();
        assert_eq!(open, [&Subject::Node { node: "api".into() }]);
    }

    #[test]
    fn one_window_blips_do_not_open_and_are_forgotten() {
        let rule = Debounce {
            open_after: 2,
            of_windows: 3,
            resolve_after: 3,
        };
        let mut i = Incidents::default();
        assert!(i.step(vec![raw("a", 0)], |_| rule).is_empty());
        for k in 1..=3 {
            assert!(i.step(vec![], |_| rule).is_empty(), "window {k}");
        }
        // the history slid past the blip: nothing tracked
        assert!(i.is_empty());
    }

    #[test]
    fn a_user_rules_open_incident_keeps_no_baseline_from_learning() {
        let rule = Debounce {
            open_after: 1,
            of_windows: 1,
            resolve_after: 3,
        };
        let mut i = Incidents::default();
        let mut f = raw("api", 0);
        f.rule = Some("everything".into());
        assert_eq!(i.step(vec![f], |_| rule).len(), 1);
        assert_eq!(i.open(), 1);
        assert_eq!(i.open_subjects().count(), 0);
    }
}
