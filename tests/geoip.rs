//! GeoIP and ASN enrichment with MaxMind's test databases (../shared/conformance/geoip, MIT or
//! Apache-2.0): public addresses get `*.geo.*` and `*.as.*`, special ones nothing, LEEF country
//! keys on request, and a missing database stops the start naming the file.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_defender-dsm");

fn db(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/geoip")
        .join(name)
}

fn translate(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("translate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("translate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn network_event(local: &str, remote: &str) -> String {
    format!(
        r#"{{"category":"AdvancedHunting-DeviceNetworkEvents","tenantId":"t","properties":{{"Timestamp":"2026-10-14T08:31:11Z","DeviceId":"d1","DeviceName":"ws-01","ActionType":"ConnectionSuccess","LocalIP":"{local}","LocalPort":50133,"RemoteIP":"{remote}","RemotePort":443,"Protocol":"Tcp","ReportId":1}}}}"#
    )
}

#[test]
fn public_addresses_get_geo_and_as_fields_and_special_ones_nothing() {
    let city = db("GeoLite2-City-Test.mmdb");
    let asn = db("GeoLite2-ASN-Test.mmdb");
    let args = [
        "--format=ecs",
        "--geoip-city",
        city.to_str().expect("path"),
        "--geoip-asn",
        asn.to_str().expect("path"),
    ];
    let (code, out, err) = translate(&args, &network_event("10.20.7.42", "81.2.69.142"));
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one document");
    let geo = &doc["destination"]["geo"];
    assert_eq!(geo["city_name"], "London", "{doc}");
    assert_eq!(geo["country_iso_code"], "GB");
    assert_eq!(geo["continent_name"], "Europe");
    assert!(geo["location"]["lat"].is_number());
    assert_eq!(geo["region_iso_code"], "GB-ENG");
    assert!(
        doc["source"].get("geo").is_none(),
        "a private address is not looked up"
    );

    // The ASN database knows 1.128.0.0/11 (Telstra in MaxMind's test data).
    let (_, out, _) = translate(&args, &network_event("10.20.7.42", "1.128.0.1"));
    let doc: serde_json::Value = serde_json::from_str(out.trim()).expect("one document");
    assert_eq!(doc["destination"]["as"]["number"], 1221, "{doc}");
    assert!(doc["destination"]["as"]["organization"]["name"].is_string());
}

#[test]
fn leef_country_keys_on_request_and_a_missing_database_names_the_file() {
    let city = db("GeoLite2-City-Test.mmdb");
    let event = network_event("10.20.7.42", "81.2.69.142");
    let plain = ["--geoip-city", city.to_str().expect("path")];
    let (_, out, _) = translate(&plain, &event);
    assert!(!out.contains("dstCountry="), "off by default: {out}");
    let with = [&plain[..], &["--geoip-leef"]].concat();
    let (_, out, _) = translate(&with, &event);
    assert!(out.contains("\tdstCountry=GB"), "{out}");
    let (code, _, err) = translate(&["--geoip-city", "/nonexistent/City.mmdb"], &event);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/City.mmdb"), "{err}");
    let not_a_db = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let (code, _, err) = translate(&["--geoip-city", not_a_db.to_str().expect("path")], &event);
    assert_eq!(code, 1);
    assert!(
        err.contains("Cargo.toml") && err.contains("GeoIP City database"),
        "{err}"
    );
}

#[test]
fn serve_picks_up_a_replaced_database_without_a_restart() {
    let mut serve = common::ServeProcess::new(
        "geoip-reload",
        "[[outputs]]\nname = \"ecs\"\ntype = \"file\"\npath = \"{dir}/events.ecs.ndjson\"\nformat = \"ecs\"\n\
         [mappings]\nwatch_interval_seconds = 1\n[geoip]\ncity = \"{dir}/geo.mmdb\"\n",
    );
    // First a Country database: no city names.
    std::fs::copy(db("GeoLite2-Country-Test.mmdb"), serve.dir.join("geo.mmdb")).expect("copy");
    serve.spawn();
    let url = format!("http://127.0.0.1:{}/v1/ingest", serve.port);
    let post = || {
        let r = common::request(
            "POST",
            &url,
            &[],
            network_event("10.0.0.1", "81.2.69.142").into_bytes(),
            None,
        )
        .expect("post");
        assert_eq!(r.status, 202, "{}", r.body);
    };
    post();
    // The updater replaces the file: a new inode, as geoipupdate's rename does.
    let tmp = serve.dir.join("geo.mmdb.new");
    std::fs::copy(db("GeoLite2-City-Test.mmdb"), &tmp).expect("copy");
    std::fs::rename(&tmp, serve.dir.join("geo.mmdb")).expect("rename");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !serve
        .metrics()
        .contains("dsm_mapping_reloads_total{result=\"applied\"} 1")
    {
        assert!(std::time::Instant::now() < deadline, "{}", serve.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    post();
    serve.stop();
    let docs: Vec<serde_json::Value> = std::fs::read_to_string(serve.dir.join("events.ecs.ndjson"))
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["destination"]["geo"]["country_iso_code"], "GB");
    assert!(docs[0]["destination"]["geo"].get("city_name").is_none());
    assert_eq!(docs[1]["destination"]["geo"]["city_name"], "London");
}
