//! LEEF over syslog to a real rsyslog (the QRadar stand-in) on loopback: UDP, TCP with LF and
//! with octet-counting framing, TLS with a CA made here, and an oversized event. Every LEEF line
//! `translate` prints must arrive intact, tabs included, one message per event.
//!
//! Needs `rsyslogd` (Debian `rsyslog` + `rsyslog-gnutls`) and `openssl`; `.ci/run` installs
//! them and runs these tests with `--ignored`.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_defender-dsm");

struct Rsyslog {
    child: Child,
    dir: PathBuf,
    udp: u16,
    tcp: u16,
    tls: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let t = TcpListener::bind("127.0.0.1:0").expect("tcp port");
    let port = t.local_addr().expect("addr").port();
    // The same number free for UDP too, so each listener can take any of them.
    UdpSocket::bind(("127.0.0.1", port)).map_or_else(|_| free_port(), |_| port)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_rsyslog() -> Rsyslog {
    let dir = std::env::temp_dir().join(format!(
        "dsm-rsyslog-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(dir.join("spool")).expect("work dir");
    // A CA and a server certificate it signs, as a QRadar collector's TLS syslog would have.
    let f = |name: &str| dir.join(name);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dsm test CA",
        ])
        .arg("-keyout")
        .arg(f("ca-key.pem"))
        .arg("-out")
        .arg(f("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(f("key.pem"))
        .arg("-out")
        .arg(f("server.csr")));
    std::fs::write(
        f("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(f("server.csr"))
        .arg("-CA")
        .arg(f("ca.pem"))
        .arg("-CAkey")
        .arg(f("ca-key.pem"))
        .arg("-extfile")
        .arg(f("ext.cnf"))
        .arg("-out")
        .arg(f("cert.pem")));
    let (udp, tcp, tls) = (free_port(), free_port(), free_port());
    let d = dir.display();
    let conf = format!(
        r#"global(workDirectory="{d}/spool"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/cert.pem"
       DefaultNetstreamDriverKeyFile="{d}/key.pem"
       maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off")
module(load="imudp")
module(load="imtcp" MaxSessions="100")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="qradar")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="qradar")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="qradar"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="qradar") {{
  action(type="omfile" file="{d}/received.log" template="raw" flushOnTXEnd="on" asyncWriting="off")
}}
"#
    );
    std::fs::write(dir.join("rsyslog.conf"), conf).expect("conf");
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(dir.join("rsyslog.conf"))
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).expect("stderr file"))
        .spawn()
        .expect("rsyslogd (install rsyslog and rsyslog-gnutls; .ci/run does)");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Probing the plain TCP port only: a bare connect to the TLS one makes rsyslog log a failed
    // handshake. rsyslog opens all its listeners before serving any.
    while TcpStream::connect(("127.0.0.1", tcp)).is_err() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Rsyslog {
        child,
        dir,
        udp,
        tcp,
        tls,
    }
}

/// What `translate` prints for `inputs`: the lines every receiver must get.
fn expected(inputs: &[&Path], extra: &[&str]) -> Vec<String> {
    let out = Command::new(BIN)
        .arg("translate")
        .args(extra)
        .args(inputs)
        .output()
        .expect("translate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

fn received(r: &Rsyslog, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(r.dir.join("received.log")).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(args: &[String], inputs: &[&Path]) -> String {
    let out = Command::new(BIN)
        .arg("translate")
        .args(args)
        .args(inputs)
        .output()
        .expect("translate --syslog");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "events go to the receiver, not stdout"
    );
    err
}

#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn every_transport_delivers_every_leef_line_intact() {
    let r = start_rsyslog();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let inputs = [
        root.join("device-process-events/process-created.input.json"),
        root.join("identity-logon-events/kerberos-success-and-ntlm-failure.input.json"),
        root.join("graph-incident/expanded-alerts-page.input.json"),
        root.join("email-events/delivered-and-blocked.input.json"),
    ];
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let lines = expected(&inputs, &[]);
    assert!(lines.len() >= 7 && lines.iter().any(|l| l.contains('\t')));
    let ca = r.dir.join("ca.pem").display().to_string();
    let runs: Vec<Vec<String>> = vec![
        vec![format!("--syslog=udp://127.0.0.1:{}", r.udp)],
        vec![format!("--syslog=tcp://127.0.0.1:{}", r.tcp)],
        vec![
            format!("--syslog=tcp://127.0.0.1:{}", r.tcp),
            "--syslog-framing=octet-counting".into(),
        ],
        vec![
            format!("--syslog=tls://127.0.0.1:{}", r.tls),
            "--syslog-framing=octet-counting".into(),
            format!("--tls-ca={ca}"),
            "--tls-server-name=localhost".into(),
        ],
        vec![
            format!("--syslog=tls://127.0.0.1:{}", r.tls),
            format!("--tls-ca={ca}"),
        ],
    ];
    let mut want = Vec::new();
    for args in &runs {
        let report = send(args, &inputs);
        assert!(
            report.contains(&format!("{} events", lines.len())),
            "{report}"
        );
        want.extend(lines.iter().cloned());
        let got = received(&r, want.len());
        assert_eq!(got.len(), want.len(), "after {args:?}");
        // UDP may reorder in principle; on loopback it does not, and TCP/TLS must not.
        assert_eq!(got, want, "after {args:?}");
    }
}

#[test]
#[ignore = "needs rsyslogd and openssl (.ci/run installs them and runs this with --ignored)"]
fn an_oversized_event_arrives_trimmed_and_marked() {
    let r = start_rsyslog();
    let dir = std::env::temp_dir().join(format!("dsm-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let big = dir.join("big.json");
    let cmd = "SQBFAFgA".repeat(4096);
    std::fs::write(&big, format!(
        r#"{{"category":"AdvancedHunting-DeviceProcessEvents","tenantId":"t","properties":{{"Timestamp":"2026-10-14T08:31:02Z","ActionType":"ProcessCreated","DeviceName":"ws-01.example","AccountName":"bob","ProcessCommandLine":"powershell.exe -enc {cmd}"}}}}"#
    )).expect("input");
    let whole = expected(&[big.as_path()], &[]);
    assert!(whole[0].len() > 30_000);
    let report = send(
        &[
            format!("--syslog=tcp://127.0.0.1:{}", r.tcp),
            "--max-message-size=4096".into(),
        ],
        &[big.as_path()],
    );
    assert!(report.contains("1 events trimmed to fit"), "{report}");
    let got = received(&r, 1);
    assert_eq!(got.len(), 1);
    assert!(got[0].len() <= 4096, "{}", got[0].len());
    assert!(
        got[0].contains("\ttruncated=ProcessCommandLine\tdsmId="),
        "{}",
        &got[0][got[0].len() - 80..]
    );
    assert!(got[0].contains("\tusrName=bob\t"));
    let _ = std::fs::remove_dir_all(dir);
}
