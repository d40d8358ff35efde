//! ECS JSON documents written from a plan: the set of ECS paths a family can fill is known when
//! the mapping files load, so each record only fills slots and the writer walks a sorted tree.
//! No JSON tree is built per record, and key order is stable (sorted, as Elastic shows documents).

use std::io::Write as _;

use crate::mapping::value::Val;

#[derive(Debug, Clone)]
struct PlanNode {
    key: String,
    kind: NodeKind,
}

#[derive(Debug, Clone)]
enum NodeKind {
    Leaf(usize),
    Object {
        children: Vec<usize>,
        dynamic: Option<usize>,
    },
}

/// The ECS layout of one family.
#[derive(Debug, Clone)]
pub struct EcsPlan {
    nodes: Vec<PlanNode>,
    slots: usize,
    dynamics: usize,
}

impl Default for EcsPlan {
    fn default() -> Self {
        EcsPlan {
            nodes: vec![PlanNode {
                key: String::new(),
                kind: NodeKind::Object {
                    children: vec![],
                    dynamic: None,
                },
            }],
            slots: 0,
            dynamics: 0,
        }
    }
}

impl EcsPlan {
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    pub fn dynamic_count(&self) -> usize {
        self.dynamics
    }

    /// The slot for a leaf at `path` (dotted), created on first use.
    pub fn slot(&mut self, path: &str) -> Result<usize, String> {
        let (parent, last) = self.parent_of(path)?;
        if let Some(existing) = self.child(parent, last) {
            return match self.nodes[existing].kind {
                NodeKind::Leaf(slot) => Ok(slot),
                NodeKind::Object { .. } => Err(format!(
                    "`{path}` is an object here (other fields go below it), not a value"
                )),
            };
        }
        let slot = self.slots;
        self.slots += 1;
        self.add_child(parent, last, NodeKind::Leaf(slot));
        Ok(slot)
    }

    /// A place at `path` (an object) where keys known only per record are merged in.
    pub fn dynamic(&mut self, path: &str) -> Result<usize, String> {
        let node = self.object(path)?;
        let next = self.dynamics;
        match &mut self.nodes[node].kind {
            NodeKind::Object {
                dynamic: Some(d), ..
            } => Ok(*d),
            NodeKind::Object { dynamic, .. } => {
                *dynamic = Some(next);
                self.dynamics += 1;
                Ok(next)
            }
            NodeKind::Leaf(_) => Err(format!("`{path}` is a value here, not an object")),
        }
    }

    fn parent_of<'p>(&mut self, path: &'p str) -> Result<(usize, &'p str), String> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!("`{path}` is not a dotted ECS path"));
        }
        match path.rsplit_once('.') {
            Some((parent, last)) => Ok((self.object(parent)?, last)),
            None => Ok((0, path)),
        }
    }

    fn object(&mut self, path: &str) -> Result<usize, String> {
        let mut cur = 0;
        for part in path.split('.') {
            if part.is_empty() {
                return Err(format!("`{path}` is not a dotted ECS path"));
            }
            cur = match self.child(cur, part) {
                Some(n) => match self.nodes[n].kind {
                    NodeKind::Object { .. } => n,
                    NodeKind::Leaf(_) => {
                        return Err(format!("`{path}` goes below `{part}`, which is a value"))
                    }
                },
                None => self.add_child(
                    cur,
                    part,
                    NodeKind::Object {
                        children: vec![],
                        dynamic: None,
                    },
                ),
            };
        }
        Ok(cur)
    }

    fn child(&self, node: usize, key: &str) -> Option<usize> {
        match &self.nodes[node].kind {
            NodeKind::Object { children, .. } => {
                children.iter().copied().find(|&c| self.nodes[c].key == key)
            }
            NodeKind::Leaf(_) => None,
        }
    }

    fn add_child(&mut self, parent: usize, key: &str, kind: NodeKind) -> usize {
        let id = self.nodes.len();
        self.nodes.push(PlanNode {
            key: key.to_string(),
            kind,
        });
        let at = match &self.nodes[parent].kind {
            NodeKind::Object { children, .. } => {
                children.partition_point(|&c| self.nodes[c].key.as_str() < key)
            }
            NodeKind::Leaf(_) => 0,
        };
        if let NodeKind::Object { children, .. } = &mut self.nodes[parent].kind {
            children.insert(at, id);
        }
        id
    }

    /// Writes one document. `dynamics[d]` must be sorted by key.
    pub fn write(&self, slots: &[Option<Val>], dynamics: &[Vec<(String, Val)>], out: &mut Vec<u8>) {
        self.write_object(0, slots, dynamics, out);
    }

    fn write_object(
        &self,
        node: usize,
        slots: &[Option<Val>],
        dynamics: &[Vec<(String, Val)>],
        out: &mut Vec<u8>,
    ) -> bool {
        let NodeKind::Object { children, dynamic } = &self.nodes[node].kind else {
            return false;
        };
        let extra: &[(String, Val)] = dynamic
            .and_then(|d| dynamics.get(d))
            .map_or(&[], Vec::as_slice);
        out.push(b'{');
        let mut wrote = false;
        let mut e = 0;
        for &c in children {
            let child = &self.nodes[c];
            while e < extra.len() && extra[e].0.as_str() < child.key.as_str() {
                write_member(&extra[e].0, &extra[e].1, &mut wrote, out);
                e += 1;
            }
            if e < extra.len() && extra[e].0 == child.key {
                e += 1;
            }
            match child.kind {
                NodeKind::Leaf(slot) => {
                    if let Some(Some(v)) = slots.get(slot) {
                        write_member(&child.key, v, &mut wrote, out);
                    }
                }
                NodeKind::Object { .. } => {
                    let mark = out.len();
                    if wrote {
                        out.push(b',');
                    }
                    write_str(&child.key, out);
                    out.push(b':');
                    if self.write_object(c, slots, dynamics, out) {
                        wrote = true;
                    } else {
                        out.truncate(mark);
                    }
                }
            }
        }
        for (k, v) in &extra[e..] {
            write_member(k, v, &mut wrote, out);
        }
        out.push(b'}');
        wrote
    }
}

fn write_member(key: &str, v: &Val, wrote: &mut bool, out: &mut Vec<u8>) {
    if *wrote {
        out.push(b',');
    }
    write_str(key, out);
    out.push(b':');
    write_val(v, out);
    *wrote = true;
}

/// One value as JSON.
pub fn write_val(v: &Val, out: &mut Vec<u8>) {
    match v {
        Val::Str(s) => write_str(s, out),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Val::Float(f) => {
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Time(t) => {
            let mut s = String::with_capacity(24);
            t.write_iso_millis(&mut s);
            write_str(&s, out);
        }
        Val::Json(j) => {
            let _ = serde_json::to_writer(&mut *out, j.as_ref());
        }
        Val::List(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_val(x, out);
            }
            out.push(b']');
        }
    }
}

/// A JSON string literal; unescaped runs are copied whole.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&b[start..i]);
                let _ = write!(out, "\\u{c:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn s(x: &str) -> Val<'static> {
        Val::Str(Cow::Owned(x.to_string()))
    }

    #[test]
    fn sorted_nested_and_empty_objects_dropped() {
        let mut plan = EcsPlan::default();
        let name = plan.slot("process.name").unwrap();
        let pid = plan.slot("process.pid").unwrap();
        let ts = plan.slot("@timestamp").unwrap();
        let user = plan.slot("user.name").unwrap();
        let dynamic = plan.dynamic("vendor.event").unwrap();
        let known = plan.slot("vendor.event.known").unwrap();
        assert_eq!(
            plan.slot("process.pid").unwrap(),
            pid,
            "a path keeps its slot"
        );
        assert!(plan.slot("process").is_err());
        assert!(plan.slot("process.pid.x").is_err());
        let mut slots = vec![None; plan.slot_count()];
        slots[name] = Some(s("a\"b\n"));
        slots[pid] = Some(Val::Int(4));
        slots[ts] = Some(s("t"));
        slots[known] = Some(Val::Bool(true));
        let _ = user;
        let dynamics = vec![vec![
            ("aaa".to_string(), Val::Int(1)),
            ("known".to_string(), Val::Int(2)),
            ("zzz".to_string(), s("\u{1}")),
        ]];
        let mut out = Vec::new();
        plan.write(&slots, &dynamics[..=dynamic], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"@timestamp":"t","process":{"name":"a\"b\n","pid":4},"vendor":{"event":{"aaa":1,"known":true,"zzz":"\u0001"}}}"#
        );
    }
}
