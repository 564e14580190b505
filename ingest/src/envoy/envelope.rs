//! Container-runtime JSON envelopes around a proxy's text log line.
//!
//! Log shippers on Kubernetes (Fluent Bit, Filebeat, Docker's `json-file` driver) wrap each
//! line a container wrote: `{"message":"<line>","stream":"stdout","kubernetes":{"container":
//! {"name":…},"pod":{"name":…},"labels":{"service":…}}}` (Docker writes the line under
//! `log`, with its trailing newline). Example: elastic/integrations'
//! `packages/envoyproxy/data_stream/log/_dev/test/pipeline/test-log.log`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::error::{Reject, RejectReason};
use crate::mapping::{Endpoint, Mapping, MatchField, Side, UNKNOWN_SERVICE};

use super::scan::{show, trim};

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, alias = "log")]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kubernetes: Option<Kubernetes<'a>>,
}

#[derive(Deserialize)]
struct Kubernetes<'a> {
    #[serde(borrow)]
    container: Option<Named<'a>>,
    #[serde(borrow)]
    pod: Option<Named<'a>>,
    #[serde(borrow)]
    labels: Option<Labels<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Labels<'a> {
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    app: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "app.kubernetes.io/name")]
    app_name: Option<Cow<'a, str>>,
}

/// An unwrapped envelope: the inner line and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// The proxy's line, JSON-unescaped, without an `ACCESS ` prefix or surrounding whitespace.
    pub(crate) message: String,
    /// The workload that wrote it: label `service`, else label `app`, else label
    /// `app.kubernetes.io/name`, else the container name.
    pub(crate) workload: Option<String>,
    /// The pod name.
    pub(crate) pod: Option<String>,
}

/// True when the (trimmed) line looks like a JSON envelope rather than a text log line.
pub(crate) fn is_envelope(line: &[u8]) -> bool {
    line.first() == Some(&b'{')
}

/// Parses an envelope line.
///
/// # Errors
/// `invalid-utf8` when the line is not UTF-8; `bad-json` when it is not a JSON object or has no
/// string `message`/`log`.
pub(crate) fn unwrap(line: &[u8]) -> Result<Envelope, Reject> {
    let s = std::str::from_utf8(line).map_err(|e| {
        Reject::new(
            RejectReason::InvalidUtf8,
            format!("invalid utf-8 in json envelope at byte {}", e.valid_up_to()),
        )
    })?;
    let raw: Raw<'_> = serde_json::from_str(s).map_err(|e| {
        Reject::new(
            RejectReason::BadJson,
            format!("json envelope {}: {e}", show(line)),
        )
    })?;
    let Some(message) = raw.message else {
        return Err(Reject::new(
            RejectReason::BadJson,
            "json envelope has no \"message\" or \"log\" string",
        ));
    };
    let (mut workload, mut pod) = (None, None);
    if let Some(k) = raw.kubernetes {
        let labels = k.labels.map(|l| [l.service, l.app, l.app_name]);
        let container = k.container.and_then(|c| c.name);
        workload = labels
            .into_iter()
            .flatten()
            .chain(std::iter::once(container))
            .flatten()
            .find(|s| !s.is_empty())
            .map(Cow::into_owned);
        pod = k.pod.and_then(|p| p.name).map(Cow::into_owned);
    }
    let inner = message.trim();
    let inner = inner.strip_prefix("ACCESS ").map_or(inner, str::trim);
    Ok(Envelope {
        message: inner.to_owned(),
        workload,
        pod,
    })
}

/// Drops the `ACCESS ` prefix that some Envoy deployments (e.g. Ambassador / Emissary, or a
/// format string starting with `ACCESS `) put before the default format.
pub(crate) fn strip_access(line: &[u8]) -> &[u8] {
    line.strip_prefix(b"ACCESS ").map_or(line, trim)
}

impl Envelope {
    /// The calling service of an edge proxy's line: the mapping's own service, else a
    /// source-side rule on the pod name, else the envelope's workload, else `unknown`.
    pub(crate) fn source<'a>(&'a self, mapping: &'a Mapping) -> Endpoint<'a> {
        if let Some(own) = mapping.own() {
            return own;
        }
        if let Some(pod) = self.pod.as_deref()
            && let Some(hit) = mapping.resolve(Side::Source, &[(MatchField::Pod, pod)])
        {
            return hit;
        }
        mapping.own_or(self.workload.as_deref().unwrap_or(UNKNOWN_SERVICE))
    }
}
