//! A real rsyslog on loopback ports of its own (the QRadar stand-in): plain TCP, UDP and TLS
//! listeners writing every message raw, one per line, to `received.log` in its directory.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Rsyslog {
    pub child: Child,
    pub dir: PathBuf,
    pub udp: u16,
    pub tcp: u16,
    pub tls: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    let t = TcpListener::bind("127.0.0.1:0").expect("tcp port");
    let port = t.local_addr().expect("addr").port();
    // The same number free for UDP too, so each listener can take any of them.
    UdpSocket::bind(("127.0.0.1", port)).map_or_else(|_| free_port(), |_| port)
}

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn start_rsyslog() -> Rsyslog {
    start_rsyslog_on(None)
}

/// rsyslog with its plain TCP listener on `tcp` when given (for a receiver that comes back on
/// the port a sender already knows).
pub fn start_rsyslog_on(tcp: Option<u16>) -> Rsyslog {
    let dir = std::env::temp_dir().join(format!(
        "dsm-rsyslog-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(dir.join("spool")).expect("work dir");
    // A CA and a server certificate it signs, as a QRadar collector's TLS syslog would have.
    super::make_certs(&dir);
    let (udp, tcp, tls) = (free_port(), tcp.unwrap_or_else(free_port), free_port());
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

/// The lines rsyslog wrote, once there are `want` of them or 20 s passed.
pub fn received(r: &Rsyslog, want: usize) -> Vec<String> {
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
