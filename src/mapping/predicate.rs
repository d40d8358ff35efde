//! Conditions over a record: which records a family claims (`<select>`) and when a field or
//! group applies (`<when>`).

use crate::json::Json;
use regex::Regex;

use super::path::Path;
use super::scratch::Scratch;

#[derive(Debug, Clone)]
pub enum Predicate {
    Equals(Path, String),
    NotEquals(Path, String),
    OneOf(Path, Vec<String>),
    Prefix(Path, String),
    Exists(Path),
    Missing(Path),
    Matches(Path, Regex),
    All(Vec<Predicate>),
    Any(Vec<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    pub fn eval<'a>(&self, rec: &'a Json<'a>, cache: &mut Scratch) -> bool {
        let text = |p: &Path, cache: &mut Scratch| -> Option<String> {
            p.resolve(rec, cache).map(|v| v.to_text().into_owned())
        };
        match self {
            Predicate::Equals(p, v) => {
                str_at(p, rec).map_or_else(|| text(p, cache).as_deref() == Some(v), |s| s == v)
            }
            Predicate::NotEquals(p, v) => {
                str_at(p, rec).map_or_else(|| text(p, cache).as_deref() != Some(v), |s| s != v)
            }
            Predicate::OneOf(p, vs) => match str_at(p, rec) {
                Some(s) => vs.iter().any(|v| v == s),
                None => text(p, cache).is_some_and(|t| vs.contains(&t)),
            },
            Predicate::Prefix(p, v) => str_at(p, rec).map_or_else(
                || text(p, cache).is_some_and(|t| t.starts_with(v.as_str())),
                |s| s.starts_with(v.as_str()),
            ),
            Predicate::Exists(p) => p.resolve(rec, cache).is_some(),
            Predicate::Missing(p) => p.resolve(rec, cache).is_none(),
            Predicate::Matches(p, re) => text(p, cache).is_some_and(|t| re.is_match(&t)),
            Predicate::All(ps) => ps.iter().all(|x| x.eval(rec, cache)),
            Predicate::Any(ps) => ps.iter().any(|x| x.eval(rec, cache)),
            Predicate::Not(p) => !p.eval(rec, cache),
        }
    }

    /// True when no record can satisfy both `self` and `other`, judged from top-level
    /// conjunctions of `equals`/`one-of`/`prefix`/`exists`/`missing` on the same path. `false` means
    /// "could overlap", which is what the overlap check must assume for anything more complex.
    pub fn disjoint(&self, other: &Predicate) -> bool {
        self.conjuncts()
            .into_iter()
            .any(|a| conjunct_disjoint(a, other))
    }

    /// The value this predicate requires at `path` (a top-level `equals`), for dispatch.
    pub fn required_value(&self, path: &str) -> Option<&str> {
        self.conjuncts().into_iter().find_map(|p| match p {
            Predicate::Equals(at, v) if at.text == path => Some(v.as_str()),
            _ => None,
        })
    }

    fn conjuncts(&self) -> Vec<&Predicate> {
        match self {
            Predicate::All(ps) => ps.iter().flat_map(Predicate::conjuncts).collect(),
            other => vec![other],
        }
    }
}

/// Fast path: a plain string at a plain path, compared without building a value.
fn str_at<'a>(p: &Path, rec: &'a Json) -> Option<&'a str> {
    p.node(rec).and_then(Json::as_str)
}

fn values_of(p: &Predicate) -> Option<(&Path, Vec<&str>)> {
    match p {
        Predicate::Equals(path, v) => Some((path, vec![v.as_str()])),
        Predicate::OneOf(path, vs) => Some((path, vs.iter().map(String::as_str).collect())),
        _ => None,
    }
}

/// Whether one conjunct of a predicate excludes the whole of `other`. An alternative (`any`)
/// excludes what each of its branches excludes.
fn conjunct_disjoint(a: &Predicate, other: &Predicate) -> bool {
    let all_branches =
        |ps: &[Predicate], f: &dyn Fn(&Predicate) -> bool| !ps.is_empty() && ps.iter().all(f);
    match a {
        Predicate::Any(qs) => all_branches(qs, &|q| q.disjoint(other)),
        atom => other.conjuncts().into_iter().any(|b| match b {
            Predicate::Any(rs) => all_branches(rs, &|r| atom.disjoint(r)),
            _ => atoms_disjoint(atom, b),
        }),
    }
}

fn atoms_disjoint(x: &Predicate, y: &Predicate) -> bool {
    if let (Some((px, vx)), Some((py, vy))) = (values_of(x), values_of(y)) {
        return px.same_node(py) && !vx.iter().any(|v| vy.contains(v));
    }
    match (x, y) {
        (Predicate::Prefix(px, a), Predicate::Prefix(py, b)) => {
            px.same_node(py) && !a.starts_with(b.as_str()) && !b.starts_with(a.as_str())
        }
        (Predicate::Prefix(pp, pre), other) | (other, Predicate::Prefix(pp, pre)) => {
            values_of(other).is_some_and(|(pv, vs)| {
                pv.same_node(pp) && vs.iter().all(|v| !v.starts_with(pre.as_str()))
            })
        }
        (Predicate::Missing(pm), other) | (other, Predicate::Missing(pm)) => match other {
            Predicate::Exists(p) => p.same_node(pm),
            _ => values_of(other).is_some_and(|(p, _)| p.same_node(pm)),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn evaluation() {
        let text = json!({"category": "AdvancedHunting-DeviceInfo", "n": 3, "p": {"A": "{\"d\":\"Out\"}"}}).to_string();
        let rec = Json::parse(&text).unwrap();
        let mut c = Scratch::default();
        assert!(
            Predicate::Equals(p("category"), "AdvancedHunting-DeviceInfo".into())
                .eval(&rec, &mut c)
        );
        assert!(Predicate::Equals(p("n"), "3".into()).eval(&rec, &mut c));
        assert!(Predicate::Equals(p("p.A.d"), "Out".into()).eval(&rec, &mut c));
        assert!(Predicate::Prefix(p("category"), "AdvancedHunting-".into()).eval(&rec, &mut c));
        assert!(Predicate::Missing(p("x")).eval(&rec, &mut c));
        assert!(Predicate::NotEquals(p("x"), "y".into()).eval(&rec, &mut c));
        let any = Predicate::Any(vec![Predicate::Exists(p("x")), Predicate::Exists(p("n"))]);
        assert!(any.eval(&rec, &mut c));
        assert!(!Predicate::Not(Box::new(any)).eval(&rec, &mut c));
    }

    #[test]
    fn overlap_judgement() {
        let eq = |v: &str| Predicate::Equals(p("category"), v.into());
        assert!(eq("A").disjoint(&eq("B")));
        assert!(!eq("A").disjoint(&eq("A")));
        let both = Predicate::All(vec![eq("A"), Predicate::Exists(p("x"))]);
        assert!(both.disjoint(&eq("B")));
        assert!(!both.disjoint(&Predicate::Exists(p("y"))));
        assert!(Predicate::Prefix(p("category"), "Adv".into()).disjoint(&eq("Other")));
        assert!(Predicate::Missing(p("x")).disjoint(&Predicate::Exists(p("x"))));
        assert!(!Predicate::Prefix(p("category"), "Adv".into()).disjoint(&eq("Advanced")));
    }
}
