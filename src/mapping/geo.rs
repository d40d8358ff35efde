//! GeoIP and ASN enrichment of the addresses a family marks (`<geo ip="source.ip ..."/>`): ECS
//! `<prefix>.geo.*` and `<prefix>.as.*` from MaxMind-format databases held in memory (the caller
//! reads the files). Private, loopback, link-local, documentation and other special-purpose
//! addresses are not looked up. Lookups are cached per worker (an LRU in [`Scratch`]).

use crate::json::Text;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use maxminddb::Reader;
use serde::Deserialize;

use super::scratch::Scratch;
use super::value::Val;
use super::MappedEvent;
use crate::format::ecs::EcsPlan;

/// The databases, read into memory.
pub struct GeoDb {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("city", &self.city.is_some())
            .field("asn", &self.asn.is_some())
            .finish()
    }
}

impl GeoDb {
    /// From the bytes of a City (or Country) and an ASN database; either may be missing.
    pub fn from_bytes(city: Option<Vec<u8>>, asn: Option<Vec<u8>>) -> Result<GeoDb, String> {
        let open = |b: Vec<u8>, what: &str| {
            Reader::from_source(b).map_err(|e| format!("{what} database: {e}"))
        };
        Ok(GeoDb {
            city: city.map(|b| open(b, "GeoIP City")).transpose()?,
            asn: asn.map(|b| open(b, "GeoIP ASN")).transpose()?,
        })
    }

    /// What the databases know of `ip`; `None` for addresses that are not looked up or unknown.
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoInfo> {
        if !is_global(ip) {
            return None;
        }
        let mut info = GeoInfo::default();
        if let Some(r) = &self.city {
            if let Ok(Some(c)) = r.lookup(ip).and_then(|l| l.decode::<CityRecord>()) {
                let en = |n: &Option<Named>| {
                    n.as_ref()
                        .and_then(|n| n.names.get("en").map(|s| s.to_string()))
                };
                info.city_name = en(&c.city);
                info.continent_name = en(&c.continent);
                info.country_name = c
                    .country
                    .as_ref()
                    .and_then(|n| n.names.get("en").map(|s| s.to_string()));
                info.country_iso_code = c
                    .country
                    .as_ref()
                    .and_then(|n| n.iso_code.map(str::to_string));
                if let Some(loc) = &c.location {
                    info.lat = loc.latitude;
                    info.lon = loc.longitude;
                }
                if let Some(sub) = c.subdivisions.as_ref().and_then(|s| s.first()) {
                    info.region_name = sub.names.get("en").map(|s| s.to_string());
                    info.region_iso_code = match (&info.country_iso_code, sub.iso_code) {
                        (Some(country), Some(code)) => Some(format!("{country}-{code}")),
                        _ => None,
                    };
                }
            }
        }
        if let Some(r) = &self.asn {
            if let Ok(Some(a)) = r.lookup(ip).and_then(|l| l.decode::<AsnRecord>()) {
                info.as_number = a.autonomous_system_number;
                info.as_organization = a.autonomous_system_organization.map(str::to_string);
            }
        }
        (!info.is_empty()).then_some(info)
    }
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: BTreeMap<&'a str, &'a str>,
    #[serde(default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    city: Option<Named<'a>>,
    #[serde(borrow)]
    continent: Option<Named<'a>>,
    #[serde(borrow)]
    country: Option<Named<'a>>,
    location: Option<Location>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Named<'a>>>,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

/// What is known of one address.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GeoInfo {
    pub city_name: Option<String>,
    pub continent_name: Option<String>,
    pub country_iso_code: Option<String>,
    pub country_name: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub region_iso_code: Option<String>,
    pub region_name: Option<String>,
    pub as_number: Option<u32>,
    pub as_organization: Option<String>,
}

impl GeoInfo {
    fn is_empty(&self) -> bool {
        *self == GeoInfo::default()
    }
}

/// Addresses worth looking up: not private, loopback, link-local, documentation, shared,
/// benchmarking, multicast or otherwise special.
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// The ECS slots of one enriched address.
#[derive(Debug, Clone)]
pub struct GeoSlots {
    pub ip: usize,
    /// The LEEF key for the address's country.
    leef_key: &'static str,
    city_name: usize,
    continent_name: usize,
    country_iso_code: usize,
    country_name: usize,
    lat: usize,
    lon: usize,
    region_iso_code: usize,
    region_name: usize,
    as_number: usize,
    as_organization: usize,
}

impl GeoSlots {
    /// Slots for `ip_path` (`source.ip`) and the geo and AS fields beside it (`source.geo.*`).
    pub fn new(plan: &mut EcsPlan, ip_path: &str) -> Result<GeoSlots, String> {
        let prefix = ip_path
            .strip_suffix(".ip")
            .ok_or_else(|| format!("`{ip_path}`: an address to enrich is an ECS `<x>.ip` field"))?;
        let ip = plan.slot(ip_path)?;
        let leef_key = match prefix {
            "source" => "srcCountry",
            "destination" => "dstCountry",
            "client" => "clientCountry",
            "host" => "hostCountry",
            _ => "geoCountry",
        };
        let mut slot = |rest: &str| plan.slot(&format!("{prefix}.{rest}"));
        Ok(GeoSlots {
            ip,
            leef_key,
            city_name: slot("geo.city_name")?,
            continent_name: slot("geo.continent_name")?,
            country_iso_code: slot("geo.country_iso_code")?,
            country_name: slot("geo.country_name")?,
            lat: slot("geo.location.lat")?,
            lon: slot("geo.location.lon")?,
            region_iso_code: slot("geo.region_iso_code")?,
            region_name: slot("geo.region_name")?,
            as_number: slot("as.number")?,
            as_organization: slot("as.organization.name")?,
        })
    }
}

/// Fills the geo and AS fields of every marked address the event has, and with `leef` a
/// country key per address (`srcCountry` ...).
pub fn enrich(
    db: &GeoDb,
    slots: &[GeoSlots],
    ev: &mut MappedEvent,
    leef: bool,
    cache: &mut Scratch,
) {
    for s in slots {
        let ip = match ev.ecs.get(s.ip) {
            Some(Val::Str(text)) => text.parse::<IpAddr>().ok(),
            Some(Val::List(items)) => items.iter().find_map(|v| match v {
                Val::Str(text) => text.parse::<IpAddr>().ok(),
                _ => None,
            }),
            _ => None,
        };
        let Some(ip) = ip else { continue };
        let Some(info) = cache.geo(ip, |ip| db.lookup(ip).map(Arc::new)) else {
            continue;
        };
        let text = |v: &Option<String>| v.clone().map(|s| Val::Str(Text::from(s)));
        if let (true, Some(country)) = (leef, text(&info.country_iso_code)) {
            if !ev.leef.iter().any(|(k, _)| *k == s.leef_key) {
                ev.leef.push((s.leef_key, country));
            }
        }
        for (slot, v) in [
            (s.city_name, text(&info.city_name)),
            (s.continent_name, text(&info.continent_name)),
            (s.country_iso_code, text(&info.country_iso_code)),
            (s.country_name, text(&info.country_name)),
            (s.lat, info.lat.map(Val::Float)),
            (s.lon, info.lon.map(Val::Float)),
            (s.region_iso_code, text(&info.region_iso_code)),
            (s.region_name, text(&info.region_name)),
            (s.as_number, info.as_number.map(|n| Val::Int(i64::from(n)))),
            (s.as_organization, text(&info.as_organization)),
        ] {
            if let Some(v) = v {
                ev.ecs.set(slot, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_not_looked_up() {
        for ip in [
            "10.1.2.3",
            "192.168.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "198.51.100.23",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
        ] {
            assert!(!is_global(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["81.2.69.142", "89.160.20.128", "2a02:cf40::1"] {
            assert!(is_global(ip.parse().expect("ip")), "{ip}");
        }
    }
}
