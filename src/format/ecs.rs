//! ECS JSON documents written from a plan: the set of ECS paths a family can fill is known when
//! the mapping files load, so each record only fills slots and the writer walks a sorted tree.
//! No JSON tree is built per record, and key order is stable (sorted, as Elastic shows documents).

use std::io::Write as _;

use crate::mapping::value::Val;

#[derive(Debug, Clone)]
struct PlanNode {
    key: String,
    /// `"key":`, escaped once when the plan is built.
    member: Vec<u8>,
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
    layout: Option<Layout>,
}

/// Slots numbered in the order the writer visits them, so that a subtree's slots form one range
/// and an empty subtree is skipped in O(1) instead of being walked.
#[derive(Debug, Clone)]
struct Layout {
    position_of_slot: Vec<u32>,
    /// Per node: its slots' positions `lo..hi`, and whether it or a descendant has a dynamic place.
    range: Vec<(u32, u32, bool)>,
}

impl Default for EcsPlan {
    fn default() -> Self {
        EcsPlan {
            nodes: vec![PlanNode {
                key: String::new(),
                member: Vec::new(),
                kind: NodeKind::Object {
                    children: vec![],
                    dynamic: None,
                },
            }],
            slots: 0,
            dynamics: 0,
            layout: None,
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
        self.layout = None;
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
            Some((parent, last)) => Ok((
                self.object(parent)
                    .map_err(|_| format!("`{path}` goes below a path that is a value elsewhere"))?,
                last,
            )),
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
        let mut member = Vec::with_capacity(key.len() + 3);
        write_str(key, &mut member);
        member.push(b':');
        self.nodes.push(PlanNode {
            key: key.to_string(),
            member,
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

    /// Fixes the writing order once every slot is known; later `slot` calls undo it.
    pub fn finish(&mut self) {
        let mut layout = Layout {
            position_of_slot: vec![0; self.slots],
            range: vec![(0, 0, false); self.nodes.len()],
        };
        let mut next = 0u32;
        self.number(0, &mut next, &mut layout);
        self.layout = Some(layout);
    }

    fn number(&self, node: usize, next: &mut u32, layout: &mut Layout) {
        let lo = *next;
        let mut dynamic_below = false;
        match &self.nodes[node].kind {
            NodeKind::Leaf(slot) => {
                layout.position_of_slot[*slot] = *next;
                *next += 1;
            }
            NodeKind::Object { children, dynamic } => {
                dynamic_below = dynamic.is_some();
                for &c in children {
                    self.number(c, next, layout);
                    dynamic_below |= layout.range[c].2;
                }
            }
        }
        layout.range[node] = (lo, *next, dynamic_below);
    }

    /// Writes one document. `dynamics[d]` must be sorted by key.
    pub fn write(&self, slots: &[Option<Val>], dynamics: &[Vec<(String, Val)>], out: &mut Vec<u8>) {
        let filled = self.layout.as_ref().map(|l| {
            let mut marks = vec![0u32; self.slots + 1];
            for (slot, v) in slots.iter().enumerate() {
                if v.is_some() {
                    marks[l.position_of_slot[slot] as usize + 1] = 1;
                }
            }
            for i in 1..marks.len() {
                marks[i] += marks[i - 1];
            }
            marks
        });
        self.write_object(0, slots, dynamics, filled.as_deref(), out);
    }

    fn write_object(
        &self,
        node: usize,
        slots: &[Option<Val>],
        dynamics: &[Vec<(String, Val)>],
        filled: Option<&[u32]>,
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
                        if wrote {
                            out.push(b',');
                        }
                        out.extend_from_slice(&child.member);
                        write_val(v, out);
                        wrote = true;
                    }
                }
                NodeKind::Object { .. } => {
                    if let (Some(l), Some(f)) = (&self.layout, filled) {
                        let (lo, hi, dynamic_below) = l.range[c];
                        if !dynamic_below && f[hi as usize] == f[lo as usize] {
                            continue;
                        }
                    }
                    let mark = out.len();
                    if wrote {
                        out.push(b',');
                    }
                    out.extend_from_slice(&child.member);
                    if self.write_object(c, slots, dynamics, filled, out) {
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

/// Bytes that JSON strings must escape.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A JSON string literal; unescaped runs are copied whole.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    while let Some(off) = b[start..].iter().position(|&c| NEEDS_ESCAPE[c as usize]) {
        let i = start + off;
        out.extend_from_slice(&b[start..i]);
        match b[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
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
        let dynamics = [vec![
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
