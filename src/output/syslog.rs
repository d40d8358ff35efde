//! `SyslogOutput`: LEEF events to QRadar (or any syslog receiver) over UDP, TCP or TLS, framed
//! with a line feed (QRadar's default) or RFC 6587 octet counting. A failed write drops the
//! connection; `Sink::deliver` sends the whole batch again on a new one. Connecting (the TLS
//! handshake included) and every write have a time limit: a receiver that accepts connections
//! but reads nothing (hung, or stopped) fails the send instead of holding it forever.
//!
//! Written here because no crate does async TCP/UDP/TLS syslog with octet counting and
//! caller-provided timestamps (see `shared/reference/components-and-peers.md` §2); TLS is rustls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::OutputError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each event ends with `\n` (LEEF values never hold a raw line feed).
    Lf,
    /// RFC 6587 §3.4.1: `<length> <event>`.
    OctetCounting,
}

/// TLS settings: the CA that signed the receiver's certificate (the system's roots are not
/// used: a QRadar collector's certificate is almost always from a private CA), an optional
/// client certificate, and the name to check the server certificate against (SNI).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SyslogTarget {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
    pub framing: Framing,
    /// Largest event in bytes, framing excluded (rsyslog's and QRadar's default is 64 KiB for
    /// TCP; a UDP datagram holds at most 65,507 bytes).
    pub max_message_size: usize,
    pub tls: TlsSettings,
    /// How often a batch is sent again on a new connection (after a jittered backoff) before
    /// the delivery gives up on it; a spooled output's delivery backs off by itself instead.
    pub retries: u32,
    /// Longest wait for a connection (TLS handshake included), and for each write and flush.
    pub timeout: Duration,
}

impl SyslogTarget {
    /// `udp://host:port`, `tcp://host:port` or `tls://host:port`, with defaults for the rest.
    pub fn parse(url: &str) -> Result<SyslogTarget, OutputError> {
        let bad = |why: &str| OutputError::Config(format!("syslog target `{url}`: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected udp://, tcp:// or tls://host:port"))?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(bad("the scheme is udp, tcp or tls")),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("a port is needed, as in tcp://qradar.example:514"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is a number from 1 to 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad("host and port are needed"));
        }
        Ok(SyslogTarget {
            transport,
            host: host.to_string(),
            port,
            framing: Framing::Lf,
            max_message_size: if transport == Transport::Udp {
                MAX_UDP_PAYLOAD
            } else {
                65_536
            },
            tls: TlsSettings::default(),
            retries: 5,
            timeout: Duration::from_secs(10),
        })
    }
}

impl SyslogTarget {
    /// Reads the TLS material now (for `tls://`), so that a missing or bad CA, certificate or
    /// key stops the start instead of failing every connection later.
    pub fn check(&self) -> Result<(), OutputError> {
        match self.transport {
            Transport::Tls => tls_connector(self).map(|_| ()),
            _ => Ok(()),
        }
    }
}

/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

enum Connection {
    Udp(UdpSocket),
    Tcp(BufWriter<TcpStream>),
    Tls(Box<BufWriter<TlsStream<TcpStream>>>),
}

pub struct SyslogOutput {
    target: SyslogTarget,
    name: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Option<Connection>,
    frame: Vec<u8>,
    /// Events handed to the socket since the output was made.
    pub sent: u64,
    /// Connections opened again because the receiver had closed the last one.
    pub reconnects: u64,
}

impl SyslogOutput {
    /// Checks the settings (TLS files are read here, so a bad path fails at start) and opens the
    /// connection.
    pub async fn connect(target: SyslogTarget) -> Result<SyslogOutput, OutputError> {
        let scheme = match target.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        let name = format!("{scheme}://{}:{}", target.host, target.port);
        let tls = match target.transport {
            Transport::Tls => Some(tls_connector(&target)?),
            _ => None,
        };
        let mut out = SyslogOutput {
            target,
            name,
            tls,
            conn: None,
            frame: Vec::with_capacity(4096),
            sent: 0,
            reconnects: 0,
        };
        out.conn = Some(out.open().await?);
        Ok(out)
    }

    /// Writes one event (without framing) into the connection's buffer, once. A failed write
    /// drops the connection: what was buffered or sent on it since the last flush is not known
    /// to have arrived, so the caller sends all of it again on a new connection (see
    /// `Sink::deliver`). With TCP and TLS an event may so arrive twice, never half (octet
    /// counting or LF framing keeps a cut frame from merging into the next); with UDP a lost
    /// datagram is not detected.
    pub async fn send(&mut self, event: &[u8]) -> Result<(), OutputError> {
        self.frame.clear();
        match self.target.framing {
            Framing::Lf => {
                self.frame.extend_from_slice(event);
                self.frame.push(b'\n');
            }
            Framing::OctetCounting => {
                self.frame
                    .extend_from_slice(event.len().to_string().as_bytes());
                self.frame.push(b' ');
                self.frame.extend_from_slice(event);
            }
        }
        let result = match &mut self.conn {
            Some(c) => within(self.target.timeout, "write", write_frame(c, &self.frame)).await,
            None => Err(std::io::Error::other("not connected")),
        };
        match result {
            Ok(()) => {
                self.sent += 1;
                Ok(())
            }
            Err(source) => {
                self.conn = None;
                Err(OutputError::Io {
                    target: self.name.clone(),
                    source,
                })
            }
        }
    }

    /// Opens the connection again if the receiver closed it meanwhile. A write into a TCP
    /// connection the peer has closed still succeeds once (the kernel takes it, the peer answers
    /// with a reset), so without this check the first events after a receiver restart would be
    /// lost unnoticed. A receiver never sends us data, so a read that ends the stream, or fails,
    /// means the connection is gone.
    pub async fn ensure_open(&mut self) -> Result<(), OutputError> {
        let mut probe = [0u8; 512];
        let gone = match &self.conn {
            Some(Connection::Tcp(w)) => peer_closed(w.get_ref(), &mut probe),
            Some(Connection::Tls(w)) => peer_closed(w.get_ref().get_ref().0, &mut probe),
            Some(Connection::Udp(_)) => false,
            None => true,
        };
        if gone {
            self.conn = Some(self.open().await?);
            self.reconnects += 1;
        }
        Ok(())
    }

    /// Pushes buffered frames to the socket.
    pub async fn flush(&mut self) -> Result<(), OutputError> {
        let limit = self.target.timeout;
        let r = match &mut self.conn {
            Some(Connection::Tcp(w)) => within(limit, "write", w.flush()).await,
            Some(Connection::Tls(w)) => within(limit, "write", w.flush()).await,
            _ => Ok(()),
        };
        r.map_err(|source| OutputError::Io {
            target: self.name.clone(),
            source,
        })
    }

    /// Flushes and closes the connection (a TLS close_notify is sent).
    pub async fn close(mut self) -> Result<(), OutputError> {
        self.flush().await?;
        let limit = self.target.timeout;
        let r = match self.conn.take() {
            Some(Connection::Tcp(mut w)) => within(limit, "close", w.shutdown()).await,
            Some(Connection::Tls(mut w)) => within(limit, "close", w.shutdown()).await,
            _ => Ok(()),
        };
        r.map_err(|source| OutputError::Io {
            target: self.name.clone(),
            source,
        })
    }

    pub fn target(&self) -> &SyslogTarget {
        &self.target
    }

    async fn open(&self) -> Result<Connection, OutputError> {
        match tokio::time::timeout(self.target.timeout, self.open_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(OutputError::Io {
                target: self.name.clone(),
                source: timed_out("connect", self.target.timeout),
            }),
        }
    }

    async fn open_unbounded(&self) -> Result<Connection, OutputError> {
        let io = |source| OutputError::Io {
            target: self.name.clone(),
            source,
        };
        let addr = (self.target.host.as_str(), self.target.port);
        Ok(match self.target.transport {
            Transport::Udp => {
                let local = if self.target.host.contains(':') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let s = UdpSocket::bind(local).await.map_err(io)?;
                s.connect(addr).await.map_err(io)?;
                Connection::Udp(s)
            }
            Transport::Tcp => {
                let s = TcpStream::connect(addr).await.map_err(io)?;
                s.set_nodelay(true).map_err(io)?;
                Connection::Tcp(BufWriter::with_capacity(64 * 1024, s))
            }
            Transport::Tls => {
                let Some((connector, server)) = &self.tls else {
                    return Err(OutputError::Config(
                        "TLS output without TLS settings".into(),
                    ));
                };
                let s = TcpStream::connect(addr).await.map_err(io)?;
                s.set_nodelay(true).map_err(io)?;
                let tls = connector.connect(server.clone(), s).await.map_err(io)?;
                Connection::Tls(Box::new(BufWriter::with_capacity(64 * 1024, tls)))
            }
        })
    }
}

fn peer_closed(s: &TcpStream, probe: &mut [u8]) -> bool {
    loop {
        match s.try_read(probe) {
            Ok(0) => return true,
            // TLS session tickets or a close_notify: read past them.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// `op` within `limit`, or a `TimedOut` error that says which and how long.
async fn within<T>(
    limit: Duration,
    what: &str,
    op: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or_else(|_| Err(timed_out(what, limit)))
}

fn timed_out(what: &str, limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "{what} timed out after {} s (the receiver takes nothing)",
            limit.as_secs_f32()
        ),
    )
}

async fn write_frame(c: &mut Connection, frame: &[u8]) -> std::io::Result<()> {
    match c {
        Connection::Udp(s) => s.send(frame).await.map(|_| ()),
        Connection::Tcp(w) => w.write_all(frame).await,
        Connection::Tls(w) => w.write_all(frame).await,
    }
}

fn tls_connector(
    target: &SyslogTarget,
) -> Result<(TlsConnector, ServerName<'static>), OutputError> {
    let cfg = |why: String| OutputError::Config(format!("TLS for {}: {why}", target.host));
    let s = &target.tls;
    let ca = s
        .ca_file
        .as_ref()
        .ok_or_else(|| cfg("a CA file (the receiver certificate's issuer) is needed".into()))?;
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| cfg(format!("{}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| cfg(format!("{}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| cfg(format!("{}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(cfg(format!("{}: no certificate in it", ca.display())));
    }
    super::install_crypto_provider();
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&s.client_cert, &s.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| cfg(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| cfg(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cfg(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(cfg(
                "a client certificate needs its key, and a key its certificate".into(),
            ))
        }
    };
    let name = s.server_name.clone().unwrap_or_else(|| target.host.clone());
    let server = ServerName::try_from(name.clone())
        .map_err(|e| cfg(format!("server name `{name}`: {e}")))?;
    Ok((TlsConnector::from(Arc::new(config)), server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let t = SyslogTarget::parse("tls://qradar.example:6514").expect("valid");
        assert_eq!(
            (t.transport, t.host.as_str(), t.port),
            (Transport::Tls, "qradar.example", 6514)
        );
        assert_eq!(
            SyslogTarget::parse("udp://[::1]:514").expect("v6").host,
            "::1"
        );
        for bad in [
            "qradar:514",
            "http://q:514",
            "tcp://q",
            "tcp://q:x",
            "tcp://:514",
        ] {
            let e = SyslogTarget::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
