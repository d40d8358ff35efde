//! `setup elastic`: puts our index templates and the lifecycle policy into a cluster,
//! idempotently (what is already there unchanged is left alone), detecting Elasticsearch (ILM)
//! or OpenSearch (ISM), and naming the privilege a 403 says is missing.

use serde_json::Value;

use super::bulk::BulkAuth;
use super::OutputError;
use crate::export::elastic::{self, Template};

/// What setup did to each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Default)]
pub struct SetupReport {
    pub distribution: String,
    pub lines: Vec<String>,
    /// The lifecycle policy could not be applied (the plugin is missing): retention is not
    /// enforced.
    pub lifecycle_missing: Option<String>,
}

pub struct ElasticSetup {
    client: reqwest::Client,
    url: String,
    auth: BulkAuth,
}

impl ElasticSetup {
    pub fn new(
        url: &str,
        auth: BulkAuth,
        ca: Option<&std::path::Path>,
    ) -> Result<ElasticSetup, OutputError> {
        super::install_crypto_provider();
        let cfg = |why: String| OutputError::Config(format!("setup elastic {url}: {why}"));
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| cfg(format!("{}: {e}", ca.display())))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| cfg(format!("{}: {e}", ca.display())))?
            {
                builder = builder.add_root_certificate(c);
            }
        }
        Ok(ElasticSetup {
            client: builder.build().map_err(|e| cfg(e.to_string()))?,
            url: url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), OutputError> {
        let url = format!("{}{path}", self.url);
        let mut req = self.client.request(method, &url);
        req = match &self.auth {
            BulkAuth::None => req,
            BulkAuth::Basic { user, password } => req.basic_auth(user, Some(password)),
            BulkAuth::ApiKey(k) => req.header("authorization", format!("ApiKey {k}")),
            BulkAuth::Bearer(t) => req.bearer_auth(t),
        };
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| OutputError::GaveUp {
            target: url.clone(),
            attempts: 1,
            last: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    fn refused(&self, what: &str, privilege: &str, status: u16, body: &Value) -> OutputError {
        if status == 401 || status == 403 {
            return OutputError::Config(format!(
                "{}: {status} putting {what}: the account needs the `{privilege}` privilege ({})",
                self.url,
                short(body)
            ));
        }
        OutputError::Config(format!(
            "{}: {status} putting {what}: {}",
            self.url,
            short(body)
        ))
    }

    /// Creates or updates the templates and the lifecycle policy for `retention_days`.
    pub async fn run(
        &self,
        set: &crate::mapping::MappingSet,
        retention_days: u32,
        data_streams: bool,
        observed: &elastic::Observed,
    ) -> Result<SetupReport, OutputError> {
        let (status, banner) = self.call(reqwest::Method::GET, "/", None).await?;
        if status != 200 {
            return Err(self.refused("(reading the cluster banner)", "monitor", status, &banner));
        }
        let opensearch = banner["version"]["distribution"] == "opensearch";
        let mut report = SetupReport {
            distribution: if opensearch {
                format!(
                    "OpenSearch {}",
                    banner["version"]["number"].as_str().unwrap_or("?")
                )
            } else {
                format!(
                    "Elasticsearch {}",
                    banner["version"]["number"].as_str().unwrap_or("?")
                )
            },
            ..SetupReport::default()
        };
        let policy = elastic::policy_name(retention_days);
        let templates = elastic::templates(
            set,
            (!opensearch).then_some(policy.as_str()),
            data_streams,
            observed,
        );
        let datasets: Vec<&str> = templates.iter().map(|t| t.dataset).collect();
        let lifecycle = if opensearch {
            self.put_ism(
                &policy,
                elastic::ism_policy(retention_days, &datasets, data_streams),
            )
            .await
        } else {
            self.put_ilm(&policy, elastic::ilm_policy(retention_days))
                .await
        };
        match lifecycle {
            Ok(change) => report
                .lines
                .push(format!("lifecycle policy {policy}: {change:?}")),
            Err(Missing(why)) => report.lifecycle_missing = Some(why),
        }
        for t in &templates {
            let change = self.put_template(t).await?;
            report
                .lines
                .push(format!("index template {}: {change:?}", t.name));
        }
        Ok(report)
    }

    async fn put_template(&self, t: &Template) -> Result<Change, OutputError> {
        let path = format!("/_index_template/{}", t.name);
        let (status, existing) = self.call(reqwest::Method::GET, &path, None).await?;
        let current = existing["index_templates"][0]["index_template"].clone();
        if status == 200 && same_template(&current, &t.body) {
            return Ok(Change::Unchanged);
        }
        let (put, body) = self
            .call(reqwest::Method::PUT, &path, Some(&t.body))
            .await?;
        if !(200..300).contains(&put) {
            return Err(self.refused(
                &format!("index template {}", t.name),
                "manage_index_templates",
                put,
                &body,
            ));
        }
        Ok(if status == 200 {
            Change::Updated
        } else {
            Change::Created
        })
    }
}

impl ElasticSetup {
    /// The index templates of Elastic's `m365_defender` integration that the cluster lacks.
    pub async fn missing_integration_templates(&self) -> Result<Vec<String>, OutputError> {
        let mut missing = Vec::new();
        for ds in ["alert", "event", "incident", "log", "vulnerability"] {
            let name = format!("logs-m365_defender.{ds}");
            let (status, _) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/_index_template/{name}"),
                    None,
                )
                .await?;
            if status != 200 {
                missing.push(name);
            }
        }
        Ok(missing)
    }
}

/// A lifecycle plugin the cluster does not have.
pub struct Missing(String);

impl From<OutputError> for Missing {
    fn from(e: OutputError) -> Missing {
        Missing(e.to_string())
    }
}

impl ElasticSetup {
    async fn put_ilm(&self, name: &str, body: Value) -> Result<Change, Missing> {
        let path = format!("/_ilm/policy/{name}");
        let (status, existing) = self.call(reqwest::Method::GET, &path, None).await?;
        if status == 200 && existing[name]["policy"]["phases"] == body["policy"]["phases"] {
            return Ok(Change::Unchanged);
        }
        let (put, resp) = self.call(reqwest::Method::PUT, &path, Some(&body)).await?;
        match put {
            200..=299 => Ok(if status == 200 {
                Change::Updated
            } else {
                Change::Created
            }),
            400 | 404 | 405 if no_handler(&resp) => Err(Missing(format!(
                "{}: this cluster has no ILM (`_ilm`): data is kept until deleted by hand",
                self.url
            ))),
            _ => Err(Missing(
                self.refused("the ILM policy", "manage_ilm", put, &resp)
                    .to_string(),
            )),
        }
    }

    async fn put_ism(&self, name: &str, body: Value) -> Result<Change, Missing> {
        let path = format!("/_plugins/_ism/policies/{name}");
        let (status, existing) = self.call(reqwest::Method::GET, &path, None).await?;
        if status == 200 {
            let same = existing["policy"]["states"] == body["policy"]["states"]
                && existing["policy"]["ism_template"][0]["index_patterns"]
                    == body["policy"]["ism_template"][0]["index_patterns"];
            if same {
                return Ok(Change::Unchanged);
            }
            let seq = existing["_seq_no"].as_i64().unwrap_or(0);
            let term = existing["_primary_term"].as_i64().unwrap_or(0);
            let path = format!("{path}?if_seq_no={seq}&if_primary_term={term}");
            let (put, resp) = self.call(reqwest::Method::PUT, &path, Some(&body)).await?;
            return match put {
                200..=299 => Ok(Change::Updated),
                _ => Err(Missing(
                    self.refused(
                        "the ISM policy",
                        "cluster:admin/opendistro/ism/policy/write",
                        put,
                        &resp,
                    )
                    .to_string(),
                )),
            };
        }
        let (put, resp) = self.call(reqwest::Method::PUT, &path, Some(&body)).await?;
        match put {
            200..=299 => Ok(Change::Created),
            400 | 404 | 405 if no_handler(&resp) => Err(Missing(format!(
                "{}: this cluster has no ISM plugin (`_plugins/_ism`): data is kept until deleted by hand",
                self.url
            ))),
            _ => Err(Missing(
                self.refused("the ISM policy", "cluster:admin/opendistro/ism/policy/write", put, &resp)
                    .to_string(),
            )),
        }
    }
}

/// The parts of a template we set are as we would set them.
fn same_template(current: &Value, wanted: &Value) -> bool {
    ["index_patterns", "priority", "_meta", "data_stream"]
        .iter()
        .all(|k| current[k] == wanted[k])
        && current["template"]["mappings"]["properties"]
            == wanted["template"]["mappings"]["properties"]
}

fn no_handler(v: &Value) -> bool {
    v.to_string().contains("no handler found")
}

fn short(v: &Value) -> String {
    let s = match v["error"]["reason"].as_str() {
        Some(r) => r.to_string(),
        None => v.to_string(),
    };
    s.chars().take(300).collect()
}
