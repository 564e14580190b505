//! The `--format` values and the parser each one builds.

use std::str::FromStr;

use schemas::Reporter;

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::source::LineParser;
use crate::{envoy, istio, nginx, spans};

/// An input format, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `envoy`: Envoy's default text access-log format.
    Envoy,
    /// `envoy-json`: Envoy `json_format` / `typed_json_format` access logs.
    EnvoyJson,
    /// `istio`: Istio's default sidecar text format.
    Istio,
    /// `nginx-combined`: NGINX's predefined `combined` format.
    NginxCombined,
    /// `nginx-ingress`: the ingress-nginx controller's `upstreaminfo` format.
    NginxIngress,
    /// `nginx:'<log_format>'`: any NGINX `log_format`, given verbatim.
    Nginx(String),
    /// `spans-csv`: span tables (`TraceID,SpanID,ParentID,PodName,OperationName,…`).
    SpansCsv,
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "envoy" => Format::Envoy,
            "envoy-json" => Format::EnvoyJson,
            "istio" => Format::Istio,
            "nginx-combined" | "nginx" => Format::NginxCombined,
            "nginx-ingress" => Format::NginxIngress,
            "spans-csv" => Format::SpansCsv,
            _ => match s.strip_prefix("nginx:") {
                Some(f) => {
                    let f = f.trim();
                    let f = f
                        .strip_prefix('\'')
                        .and_then(|f| f.strip_suffix('\''))
                        .unwrap_or(f);
                    Format::Nginx(f.to_owned())
                }
                None => return Err(Error::UnknownFormat(s.to_owned())),
            },
        })
    }
}

impl Format {
    /// Builds this format's parser with the given service mapping.
    ///
    /// # Errors
    /// [`Error::LogFormat`] when a user-given NGINX `log_format` cannot be compiled.
    pub fn parser(&self, mapping: &Mapping) -> Result<Box<dyn LineParser>> {
        let m = mapping.clone();
        Ok(match self {
            Format::Envoy => Box::new(envoy::EnvoyTextParser::new(m)),
            Format::EnvoyJson => Box::new(envoy::EnvoyJsonParser::new(m)),
            Format::Istio => Box::new(istio::IstioParser::new(m)),
            Format::NginxCombined => Box::new(nginx::NginxParser::new(
                nginx::COMBINED,
                Reporter::Nginx,
                m,
            )?),
            Format::NginxIngress => Box::new(nginx::NginxParser::new(
                nginx::UPSTREAMINFO,
                Reporter::NginxIngress,
                m,
            )?),
            Format::Nginx(f) => Box::new(nginx::NginxParser::new(f, Reporter::Nginx, m)?),
            Format::SpansCsv => Box::new(spans::SpansCsvParser::new(m)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("envoy".parse::<Format>().unwrap(), Format::Envoy);
        assert_eq!(
            "nginx:'$remote_addr [$time_local]'"
                .parse::<Format>()
                .unwrap(),
            Format::Nginx("$remote_addr [$time_local]".into())
        );
        let err = "apache".parse::<Format>().unwrap_err().to_string();
        assert!(err.starts_with("unknown format \"apache\""), "{err}");
    }
}
