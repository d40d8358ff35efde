//! Documents written from cached skeletons. Everything in an ECS document but its values (keys,
//! braces, commas) follows from which slots are filled and which per-record (dynamic) keys the
//! record has, and the records of one family repeat the same few of those again and again.
//! Walking the plan for that text cost more than writing the values (session 8 of issue 2:
//! ~12k of ~22k instructions per document), so each thread keeps the text per shape and writes
//! only the values into it.
//!
//! The cache is per thread rather than passed in: every path that renders ECS (the CLI, the
//! file, bulk and syslog outputs) gains from it without carrying a cache through its API, and
//! it only ever changes speed, never output.

use std::cell::RefCell;

use super::{write_val, EcsPlan, EcsValues, Hole, Layout};
use crate::mapping::family::FxMap;
use crate::mapping::value::Val;

/// The fixed text of the documents that fill one set of slots and dynamic keys, and where
/// their values go.
#[derive(Debug)]
struct Skeleton {
    text: Vec<u8>,
    /// Per value, in writing order: where the fixed text before it ends, and the value's hole.
    holes: Vec<(u32, Hole)>,
}

impl Skeleton {
    fn write(&self, values: &EcsValues, dynamics: &[Vec<(String, Val)>], out: &mut Vec<u8>) {
        let mut at = 0;
        for &(end, hole) in &self.holes {
            out.extend_from_slice(&self.text[at..end as usize]);
            let v = match hole {
                Hole::Slot(slot) => values.get(slot as usize),
                Hole::Dynamic(d, i) => dynamics
                    .get(d as usize)
                    .and_then(|e| e.get(i as usize))
                    .map(|(_, v)| v),
            };
            if let Some(v) = v {
                write_val(v, out);
            }
            at = end as usize;
        }
        out.extend_from_slice(&self.text[at..]);
    }
}

/// One thread's skeletons, keyed by the layout's id, the filled-position bitset and the
/// dynamic keys.
#[derive(Default)]
struct Skeletons {
    by_shape: FxMap<Box<[u64]>, Skeleton>,
    key: Vec<u64>,
}

/// Skeletons kept per thread before the cache starts over. A family's records fill a few
/// dozen distinct sets of slots (one per kind of action, give or take optional columns); a
/// skeleton is 1-3 KB. Starting over, rather than evicting the least recently used, keeps a
/// hit to one hash lookup; a miss costs one walk of the plan.
const MOST: usize = 1024;

thread_local! {
    static SKELETONS: RefCell<Skeletons> = RefCell::default();
}

/// Writes a document through its skeleton, made on first use.
pub(super) fn write(
    plan: &EcsPlan,
    layout: &Layout,
    values: &EcsValues,
    dynamics: &[Vec<(String, Val)>],
    out: &mut Vec<u8>,
) {
    SKELETONS.with(|cell| {
        // Never taken while held (writing a value renders no document), but a miss is only
        // slower, never wrong.
        let Ok(mut cache) = cell.try_borrow_mut() else {
            return plan.walk(layout, values, dynamics, out, |_, v, out| write_val(v, out));
        };
        let Skeletons { by_shape, key } = &mut *cache;
        shape_key(plan, layout, values, dynamics, key);
        if let Some(skeleton) = by_shape.get(key.as_slice()) {
            return skeleton.write(values, dynamics, out);
        }
        let mut skeleton = Skeleton {
            text: Vec::new(),
            holes: Vec::new(),
        };
        let holes = &mut skeleton.holes;
        plan.walk(
            layout,
            values,
            dynamics,
            &mut skeleton.text,
            |hole, _, text| {
                holes.push((text.len() as u32, hole));
            },
        );
        skeleton.write(values, dynamics, out);
        if by_shape.len() >= MOST {
            by_shape.clear();
        }
        by_shape.insert(key.as_slice().into(), skeleton);
    });
}

/// What decides a document's fixed text: the layout, the filled positions, and each dynamic
/// place's keys: the place and its count of keys, then each key's length and bytes packed into
/// words, so that no two shapes make the same key.
fn shape_key(
    plan: &EcsPlan,
    layout: &Layout,
    values: &EcsValues,
    dynamics: &[Vec<(String, Val)>],
    key: &mut Vec<u64>,
) {
    plan.filled_positions(layout, values, key);
    key.push(layout.id);
    for (d, entries) in dynamics.iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        key.push((d as u64) << 32 | entries.len() as u64);
        for (name, _) in entries {
            key.push(name.len() as u64);
            key.extend(name.as_bytes().chunks(8).map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            }));
        }
    }
}
