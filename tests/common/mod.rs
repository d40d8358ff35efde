//! Helpers the integration tests share: synthetic Defender records, a test CA, HTTP requests.
// Each test crate uses some of these, not all.
#![allow(dead_code)]

pub mod rsyslog;

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

/// `defender-dsm serve` as a child process in a directory of its own, with `config.toml`,
/// `serve.log` and a LEEF file output at `events.leef`.
pub struct ServeProcess {
    pub dir: std::path::PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServeProcess {
    /// Writes the config: `data_dir`, the HTTP port and the LEEF file output, then `rest` (more
    /// tables; `{dir}` in it is the directory). Not started yet.
    pub fn new(name: &str, rest: &str) -> ServeProcess {
        let dir = std::env::temp_dir().join(format!("dsm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let d = dir.display().to_string();
        let config = format!(
            "data_dir = \"{d}/data\"\nshutdown_grace_seconds = 20\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [[outputs]]\nname = \"leef\"\ntype = \"file\"\npath = \"{d}/events.leef\"\nformat = \"leef\"\n{}",
            rest.replace("{dir}", &d)
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        ServeProcess {
            dir,
            port,
            child: None,
        }
    }

    /// Starts it and waits until it serves (its signal handlers are then in place).
    pub fn spawn(&mut self) {
        self.start(Command::new(env!("CARGO_BIN_EXE_defender-dsm")));
    }

    /// Starts it as the unprivileged user `nobody` (its directory handed over to it), so that
    /// file permissions apply to it; needs root.
    pub fn spawn_as_nobody(&mut self) {
        let ok = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&self.dir)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown (the test must run as root)");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_defender-dsm"));
        self.start(cmd);
    }

    fn start(&mut self, mut cmd: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .expect("log");
        self.child = Some(
            cmd.args(["serve", "--config"])
                .arg(self.dir.join("config.toml"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("serve"),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.metrics().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not start: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM; the service must drain and exit 0.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let status = c.wait().expect("exit");
            assert!(status.success(), "{}", self.log());
        }
    }

    /// The process's peak resident memory so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().map_or(0, std::process::Child::id);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        request("GET", &url, &[], Vec::new(), None)
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// The lines of the LEEF output.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("events.leef"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The dsmId of each LEEF line.
    pub fn ids(&self) -> Vec<String> {
        self.lines()
            .iter()
            .map(|l| l.rsplit("dsmId=").next().unwrap_or_default().to_string())
            .collect()
    }
}

/// An axum app served on a thread and runtime of its own (the stand-ins' servers); stops
/// gracefully when stopped or dropped.
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Serves `app` on `listener` (bound, non-blocking).
    pub fn serve(listener: std::net::TcpListener, app: axum::Router) -> Background {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Background {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
