//! Helpers the integration tests share: synthetic Defender records, a test CA, HTTP requests.
// Each test crate uses some of these, not all.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// `n` DeviceProcessEvents records with ReportIds `from..from + n` (each its own record id), as
/// one Event Hubs message.
pub fn records(from: u64, n: u64) -> String {
    let recs: Vec<String> = (from..from + n)
        .map(|i| {
            format!(
                r#"{{"time":"2026-10-14T08:31:02Z","tenantId":"t","operationName":"Publish","category":"AdvancedHunting-DeviceProcessEvents","properties":{{"Timestamp":"2026-10-14T08:31:02Z","ReportId":{i},"DeviceId":"d{i}","DeviceName":"ws-{i}.example","ActionType":"ProcessCreated","AccountName":"bob","ProcessCommandLine":"cmd.exe /c echo {i}"}}}}"#
            )
        })
        .collect();
    format!(r#"{{"records":[{}]}}"#, recs.join(","))
}

/// Writes `ca.pem` and a server certificate (`cert.pem`, `key.pem`) for localhost and 127.0.0.1
/// that it signs into `dir`, with openssl (`.ci/run` installs it).
pub fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dsm test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-CAcreateserial",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// One HTTP request, trusting `ca` (PEM) when given.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    ca: Option<&[u8]>,
) -> Result<Reply, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // reqwest is built without a TLS provider of its own (the crate installs ring).
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let mut client = reqwest::Client::builder();
        if let Some(ca) = ca {
            client = client.add_root_certificate(reqwest::Certificate::from_pem(ca).expect("ca"));
        }
        let client = client.build().expect("client");
        let mut req = client.request(method.parse().expect("method"), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
        Ok(Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.map_err(|e| e.to_string())?,
        })
    })
}
