//! ECS JSON documents written from a plan: the set of ECS paths a family can fill is known when
//! the mapping files load, so each record only fills slots and the writer walks a sorted tree.
//! No JSON tree is built per record, and key order is stable (sorted, as Elastic shows documents).

use std::collections::HashMap;
use std::io::Write as _;

use crate::json::Text;
use crate::mapping::value::Val;

mod skeleton;

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
    layout: Option<Layout>,
}

/// Computed by [`EcsPlan::finish`]: the order in which slots are written (a depth-first walk of
/// the sorted tree) and the objects that enclose each slot, so that a document is written by
/// visiting only the filled slots. Flat arrays, not per-node heap objects: a mix of families
/// rotates through their plans, and every pointer followed per slot was a cache miss.
#[derive(Debug, Clone, Default)]
struct Layout {
    /// Unique per computed layout (clones share it, as they share the layout): what cached
    /// skeletons are keyed by, so that a plan loaded later at the same address never meets
    /// another plan's skeletons.
    id: u64,
    slot: Vec<SlotLayout>,
    slot_at_position: Vec<u32>,
    /// Every node's `"key":` text, back to back; `member_of_node` gives each node's range.
    members: Vec<u8>,
    member_of_node: Vec<(u32, u32)>,
    /// Chains of enclosing objects (outermost first, the root left out), back to back.
    chains: Vec<u32>,
    /// Per dynamic place: its object node, and that node's chain including itself.
    dynamic_node: Vec<u32>,
    chain_of_dynamic: Vec<(u32, u32)>,
    /// Per node: the positions of its slots, `lo..hi`.
    range: Vec<(u32, u32)>,
}

/// Where one slot is written: its position in plan order, its `"key":` in `Layout::members`
/// and its chain in `Layout::chains`.
#[derive(Debug, Clone, Copy, Default)]
struct SlotLayout {
    position: u32,
    member: (u32, u32),
    chain: (u32, u32),
}

impl Layout {
    fn member(&self, (lo, hi): (u32, u32)) -> &[u8] {
        &self.members[lo as usize..hi as usize]
    }

    fn chain(&self, (lo, hi): (u32, u32)) -> &[u32] {
        &self.chains[lo as usize..hi as usize]
    }

    /// The range of `chain` in `chains`, one per distinct chain, so that equal ranges mean
    /// equal chains and unequal ones different chains.
    fn store_chain(
        &mut self,
        chain: &[u32],
        stored: &mut HashMap<Vec<u32>, (u32, u32)>,
    ) -> (u32, u32) {
        if let Some(range) = stored.get(chain) {
            return *range;
        }
        let lo = self.chains.len() as u32;
        self.chains.extend_from_slice(chain);
        let range = (lo, self.chains.len() as u32);
        stored.insert(chain.to_vec(), range);
        range
    }
}

/// The ECS values of one record, by slot. Sparse: a family plan has hundreds of slots (the vendor
/// column dictionary) but a record fills a few dozen.
#[derive(Debug, Clone)]
pub struct EcsValues<'a> {
    index: Vec<u32>,
    vals: Vec<(u32, Val<'a>)>,
}

const EMPTY: u32 = u32::MAX;

impl<'a> EcsValues<'a> {
    pub fn new(slots: usize) -> Self {
        EcsValues {
            index: vec![EMPTY; slots],
            // A process event fills about 75 slots; growing the list copied it whole.
            vals: Vec::with_capacity(slots.min(96)),
        }
    }

    #[inline]
    pub fn get(&self, slot: usize) -> Option<&Val<'a>> {
        match self.index.get(slot) {
            Some(&i) if i != EMPTY => self.vals.get(i as usize).map(|(_, v)| v),
            _ => None,
        }
    }

    #[inline]
    pub fn is_set(&self, slot: usize) -> bool {
        self.index.get(slot).is_some_and(|&i| i != EMPTY)
    }

    /// Sets the slot, replacing any value.
    #[inline]
    pub fn set(&mut self, slot: usize, v: Val<'a>) {
        let Some(&i) = self.index.get(slot) else {
            return;
        };
        if i == EMPTY {
            self.index[slot] = self.vals.len() as u32;
            self.vals.push((slot as u32, v));
        } else {
            self.vals[i as usize].1 = v;
        }
    }

    /// Keeps only the slots `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        self.vals.retain(|(slot, _)| keep(*slot as usize));
        self.index.fill(EMPTY);
        for (i, (slot, _)) in self.vals.iter().enumerate() {
            self.index[*slot as usize] = i as u32;
        }
    }

    /// Adds `v` (or its items) to the list in the slot, keeping the first of equal values.
    pub fn append(&mut self, slot: usize, v: &Val<'a>) {
        let Some(&i) = self.index.get(slot) else {
            return;
        };
        let at = if i == EMPTY {
            self.index[slot] = self.vals.len() as u32;
            // `related.*` lists gather a few values each; four saves the first two regrowths.
            self.vals
                .push((slot as u32, Val::List(Vec::with_capacity(4))));
            self.vals.len() - 1
        } else {
            i as usize
        };
        let Val::List(list) = &mut self.vals[at].1 else {
            return;
        };
        let items: &[Val] = match v {
            Val::List(items) => items,
            one => std::slice::from_ref(one),
        };
        for item in items {
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
    }
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

    /// The slots at `path` (dotted): the leaf's, or every leaf's below an object, with the
    /// dynamic places below it. Empty when the plan has nothing there.
    pub fn slots_at(&self, path: &str) -> (Vec<usize>, Vec<usize>) {
        let mut node = 0;
        for part in path.split('.') {
            match self.child(node, part) {
                Some(c) => node = c,
                None => return (Vec::new(), Vec::new()),
            }
        }
        let (mut slots, mut dynamics) = (Vec::new(), Vec::new());
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            match &self.nodes[n].kind {
                NodeKind::Leaf(slot) => slots.push(*slot),
                NodeKind::Object { children, dynamic } => {
                    stack.extend(children);
                    dynamics.extend(dynamic);
                }
            }
        }
        (slots, dynamics)
    }

    /// The dynamic place of the object at `path` itself, if it has one.
    pub fn dynamic_at(&self, path: &str) -> Option<usize> {
        let mut node = 0;
        for part in path.split('.') {
            node = self.child(node, part)?;
        }
        match &self.nodes[node].kind {
            NodeKind::Object { dynamic, .. } => *dynamic,
            NodeKind::Leaf(_) => None,
        }
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

    /// Fixes the writing order once every slot is known; adding a slot later undoes it.
    pub fn finish(&mut self) {
        static NEXT_LAYOUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut layout = Layout {
            id: NEXT_LAYOUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            slot: vec![SlotLayout::default(); self.slots],
            slot_at_position: vec![0; self.slots],
            dynamic_node: vec![0; self.dynamics],
            chain_of_dynamic: vec![(0, 0); self.dynamics],
            range: vec![(0, 0); self.nodes.len()],
            ..Layout::default()
        };
        // `"key":` of every node, escaped once here.
        for node in &self.nodes {
            let lo = layout.members.len() as u32;
            write_str(&node.key, &mut layout.members);
            layout.members.push(b':');
            layout
                .member_of_node
                .push((lo, layout.members.len() as u32));
        }
        let mut next = 0u32;
        let mut chain = Vec::new();
        let mut stored = HashMap::new();
        self.number(0, &mut next, &mut chain, &mut stored, &mut layout);
        self.layout = Some(layout);
    }

    fn number(
        &self,
        node: usize,
        next: &mut u32,
        chain: &mut Vec<u32>,
        stored: &mut HashMap<Vec<u32>, (u32, u32)>,
        layout: &mut Layout,
    ) {
        let lo = *next;
        match &self.nodes[node].kind {
            NodeKind::Leaf(slot) => {
                layout.slot[*slot] = SlotLayout {
                    position: *next,
                    member: layout.member_of_node[node],
                    chain: layout.store_chain(chain, stored),
                };
                layout.slot_at_position[*next as usize] = *slot as u32;
                *next += 1;
            }
            NodeKind::Object { children, dynamic } => {
                if node != 0 {
                    chain.push(node as u32);
                }
                if let Some(d) = dynamic {
                    layout.dynamic_node[*d] = node as u32;
                    layout.chain_of_dynamic[*d] = layout.store_chain(chain, stored);
                }
                for &c in children {
                    self.number(c, next, chain, stored, layout);
                }
                if node != 0 {
                    chain.pop();
                }
            }
        }
        layout.range[node] = (lo, *next);
    }

    /// Writes one document: the filled slots in plan order, and the dynamic entries (each
    /// `dynamics[d]` sorted by key) merged by key among the static members of their object.
    pub fn write(&self, values: &EcsValues, dynamics: &[Vec<(String, Val)>], out: &mut Vec<u8>) {
        match &self.layout {
            Some(layout) => skeleton::write(self, layout, values, dynamics, out),
            None => {
                let mut plan = self.clone();
                plan.finish();
                let layout = plan.layout.unwrap_or_default();
                self.walk(&layout, values, dynamics, out, |_, v, out| {
                    write_val(v, out)
                });
            }
        }
    }

    /// Marks the plan positions of the filled slots: a record fills a few dozen of a plan's
    /// hundreds of slots, and a bitset over positions orders them without sorting.
    fn filled_positions(&self, layout: &Layout, values: &EcsValues, bits: &mut Vec<u64>) {
        bits.clear();
        bits.resize(self.slots.div_ceil(64), 0);
        for (slot, _) in &values.vals {
            let pos = layout.slot[*slot as usize].position as usize;
            bits[pos / 64] |= 1 << (pos % 64);
        }
    }

    /// Writes the document's keys, braces and commas, and calls `value` where each value goes.
    fn walk<'v, 'a: 'v>(
        &self,
        layout: &Layout,
        values: &'v EcsValues<'a>,
        dynamics: &'v [Vec<(String, Val<'a>)>],
        out: &mut Vec<u8>,
        mut value: impl FnMut(Hole, &'v Val<'a>, &mut Vec<u8>),
    ) {
        // Dynamic entries go just before the first static member of their object whose key is
        // greater; they are few, so they alone are sorted.
        let mut pending: Vec<DynamicEntry> = Vec::new();
        for (d, entries) in dynamics.iter().enumerate() {
            let Some(&node) = layout.dynamic_node.get(d) else {
                continue;
            };
            let NodeKind::Object { children, .. } = &self.nodes[node as usize].kind else {
                continue;
            };
            for (i, (k, v)) in entries.iter().enumerate() {
                let at = children.partition_point(|&c| self.nodes[c].key.as_str() < k.as_str());
                if children.get(at).is_some_and(|&c| self.nodes[c].key == *k) {
                    continue;
                }
                let pos = children
                    .get(at)
                    .map_or(layout.range[node as usize].1, |&c| layout.range[c].0);
                pending.push(DynamicEntry {
                    pos,
                    chain: layout.chain_of_dynamic[d],
                    hole: Hole::Dynamic(d as u32, i as u32),
                    key: k,
                    val: v,
                });
            }
        }
        pending.sort_by_key(|e| e.pos);
        let mut pending = pending.into_iter().peekable();
        let mut bits = Vec::new();
        self.filled_positions(layout, values, &mut bits);
        let mut doc = Nesting::new();
        out.push(b'{');
        for (w, mut word) in bits.into_iter().enumerate() {
            while word != 0 {
                let pos = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                while let Some(e) = pending.next_if(|e| e.pos as usize <= pos) {
                    e.write(&mut doc, layout, out, &mut value);
                }
                let slot = layout.slot_at_position[pos] as usize;
                if let Some(v) = values.get(slot) {
                    let at = &layout.slot[slot];
                    doc.member(layout, at.chain, out);
                    out.extend_from_slice(layout.member(at.member));
                    value(Hole::Slot(slot as u32), v, out);
                }
            }
        }
        for e in pending {
            e.write(&mut doc, layout, out, &mut value);
        }
        for _ in doc.open {
            out.push(b'}');
        }
        out.push(b'}');
    }
}

/// Where a value goes: a slot, or entry `.1` of dynamic place `.0`.
#[derive(Debug, Clone, Copy)]
enum Hole {
    Slot(u32),
    Dynamic(u32, u32),
}

/// A member known only per record, waiting for its place among the slots: it goes before the
/// slot at plan position `pos`, in the objects of `chain`.
struct DynamicEntry<'v, 'a> {
    pos: u32,
    chain: (u32, u32),
    hole: Hole,
    key: &'v str,
    val: &'v Val<'a>,
}

impl<'v, 'a> DynamicEntry<'v, 'a> {
    fn write(
        &self,
        doc: &mut Nesting,
        layout: &Layout,
        out: &mut Vec<u8>,
        value: &mut impl FnMut(Hole, &'v Val<'a>, &mut Vec<u8>),
    ) {
        doc.member(layout, self.chain, out);
        write_str(self.key, out);
        out.push(b':');
        value(self.hole, self.val, out);
    }
}

/// The objects open while a document is written, and whether each has a member yet.
struct Nesting {
    /// The chain (range in `Layout::chains`) whose objects are open: a member in the same object
    /// as the last one costs one compare.
    current: (u32, u32),
    open: Vec<u32>,
    /// Per object, the document's own first, then the open ones: whether it has no member yet.
    fresh: Vec<bool>,
}

impl Nesting {
    fn new() -> Self {
        // ECS documents nest three or four objects deep; eight saves regrowing per record.
        let mut fresh = Vec::with_capacity(8);
        fresh.push(true);
        Nesting {
            current: (0, 0),
            open: Vec::with_capacity(8),
            fresh,
        }
    }

    /// Makes `chain`'s objects the open ones and writes the separator of a new member in the
    /// innermost.
    fn member(&mut self, layout: &Layout, chain: (u32, u32), out: &mut Vec<u8>) {
        if chain != self.current {
            let want = layout.chain(chain);
            let common = self
                .open
                .iter()
                .zip(want)
                .take_while(|(a, b)| a == b)
                .count();
            while self.open.len() > common {
                self.open.pop();
                self.fresh.pop();
                out.push(b'}');
            }
            for &node in &want[common..] {
                self.separate(out);
                out.extend_from_slice(layout.member(layout.member_of_node[node as usize]));
                out.push(b'{');
                self.open.push(node);
                self.fresh.push(true);
            }
            self.current = chain;
        }
        self.separate(out);
    }

    fn separate(&mut self, out: &mut Vec<u8>) {
        if let Some(fresh) = self.fresh.last_mut() {
            if !*fresh {
                out.push(b',');
            }
            *fresh = false;
        }
    }
}

/// One value as JSON.
pub fn write_val(v: &Val, out: &mut Vec<u8>) {
    match v {
        Val::Str(s) => write_text(s, out),
        Val::Int(i) => write_int(*i, out),
        Val::UInt(u) => write_uint(*u, out),
        Val::Float(f) => {
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Time(t) => {
            out.push(b'"');
            t.write_iso_millis_bytes(out);
            out.push(b'"');
        }
        Val::Json(j) => j.write(out),
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

/// Decimal digits of an integer (the formatting machinery costs more than the digits).
pub fn write_uint(mut u: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

pub fn write_int(i: i64, out: &mut Vec<u8>) {
    if i < 0 {
        out.push(b'-');
    }
    write_uint(i.unsigned_abs(), out);
}

/// True for a byte that JSON strings must escape.
#[inline]
pub fn needs_json_escape(c: u8) -> bool {
    NEEDS_ESCAPE[c as usize]
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

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True when some byte of `w` is below `n` (n <= 128), or equals one of `eq` (SWAR).
#[inline]
pub fn word_has(w: u64, below: u8, eq: &[u8]) -> bool {
    let mut hit = w.wrapping_sub(ONES * u64::from(below)) & !w;
    for &b in eq {
        let x = w ^ (ONES * u64::from(b));
        hit |= x.wrapping_sub(ONES) & !x;
    }
    hit & HIGHS != 0
}

/// Index of the first byte at or after `from` for which `special` holds, skipping clean
/// 8-byte words at a time.
#[inline]
pub fn next_special(
    b: &[u8],
    mut from: usize,
    below: u8,
    eq: &[u8],
    special: impl Fn(u8) -> bool,
) -> Option<usize> {
    while from + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[from..from + 8]);
        if word_has(u64::from_le_bytes(w), below, eq) {
            break;
        }
        from += 8;
    }
    let rest = &b[from..];
    if from + 8 > b.len() && !rest.is_empty() {
        // The short tail is checked as one word too, padded with a byte that is never special.
        let filler = if eq.contains(&b'a') { b'b' } else { b'a' };
        let mut w = [filler; 8];
        w[..rest.len()].copy_from_slice(rest);
        if !word_has(u64::from_le_bytes(w), below, eq) {
            return None;
        }
    }
    rest.iter().position(|&c| special(c)).map(|i| from + i)
}

/// A JSON string literal of `t`: clean text is copied as it is.
#[inline]
pub fn write_text(t: &Text, out: &mut Vec<u8>) {
    if t.is_clean() {
        out.reserve(t.len() + 2);
        out.push(b'"');
        out.extend_from_slice(t.as_bytes());
        out.push(b'"');
    } else {
        write_str(t, out);
    }
}

/// A JSON string literal; unescaped runs are copied whole.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_special(b, start, 0x20, b"\"\\", needs_json_escape) {
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

    fn s(x: &str) -> Val<'static> {
        Val::Str(Text::from(x.to_string()))
    }

    #[test]
    fn strings_escape_at_every_position_of_words_and_tails() {
        for len in 0..20 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', 'é'] {
                    let text: String = (0..len)
                        .map(|i| if i == at { special } else { 'x' })
                        .collect();
                    let mut out = Vec::new();
                    write_str(&text, &mut out);
                    let back: String = serde_json::from_slice(&out).expect("valid JSON");
                    assert_eq!(back, text);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        serde_json::to_string(&text).unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn integers_without_fmt() {
        for i in [0, 7, -7, 1_667_840_862_025, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_int(i, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), i.to_string());
        }
        let mut out = Vec::new();
        write_uint(u64::MAX, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), u64::MAX.to_string());
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
        plan.finish();
        let mut slots = EcsValues::new(plan.slot_count());
        slots.set(known, Val::Bool(true));
        slots.set(name, s("a\"b\n"));
        slots.set(pid, Val::Int(4));
        slots.set(ts, s("t"));
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

    /// Documents of alternating shapes, each written twice (the second time from the cached
    /// skeleton), against the plan walk that makes skeletons: slots filled or not, dynamic keys
    /// present, absent, renamed, or equal to a static key.
    #[test]
    fn skeletons_write_what_the_walk_writes() {
        let mut plan = EcsPlan::default();
        let a = plan.slot("a.x").unwrap();
        let b = plan.slot("a.y.z").unwrap();
        let c = plan.slot("b").unwrap();
        let known = plan.slot("v.known").unwrap();
        let d = plan.dynamic("v").unwrap();
        plan.finish();
        let layout = plan.layout.clone().unwrap();
        let fills: [&[usize]; 4] = [&[a, b, c, known], &[a], &[c, known], &[]];
        let dynamic_sets: [&[&str]; 4] = [&[], &["aa", "zz"], &["ab", "zz"], &["known"]];
        for round in 0..2 {
            for (i, fill) in fills.iter().enumerate() {
                for (j, names) in dynamic_sets.iter().enumerate() {
                    let mut values = EcsValues::new(plan.slot_count());
                    for &slot in *fill {
                        values.set(slot, s(&format!("{round}-{i}-{j}-{slot}")));
                    }
                    let mut dynamics = vec![Vec::new(); d + 1];
                    dynamics[d] = names
                        .iter()
                        .map(|n| (n.to_string(), Val::Int(j as i64)))
                        .collect();
                    let mut walked = Vec::new();
                    plan.walk(&layout, &values, &dynamics, &mut walked, |_, v, out| {
                        write_val(v, out)
                    });
                    let mut written = Vec::new();
                    plan.write(&values, &dynamics, &mut written);
                    assert_eq!(
                        String::from_utf8(written).unwrap(),
                        String::from_utf8(walked).unwrap(),
                        "round {round}, fill {i}, dynamic keys {j}"
                    );
                }
            }
        }
    }
}
