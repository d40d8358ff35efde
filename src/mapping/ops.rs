//! Field rules as the per-record mapping loop reads them (see [`Op`]).

use super::family::{Rule, Source};
use super::steps::Step;

/// A rule as the per-record loop reads it. Every record visits all of its family's rules, and a
/// realistic mix rotates through a dozen families, so the full `Rule`s (a few hundred bytes each,
/// with their lists on the heap) fell out of the L1 cache between records: reading them was the
/// mapping's largest cost (cache simulation: ~230 data misses per record). These entries keep a
/// family's loop in a few cache lines, with the conversions of member rules side by side in
/// `Family::op_steps`; the `Rule` is read only for rules that need more than a member and its
/// conversions, and for error texts. `Family::ops[i]` is `Family::rules[i]`.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The member argument the rule reads, or `Op::GENERAL`.
    pub(super) member: u32,
    /// Where the rule's slots start in `Family::op_slots`: `ecs` ones, then `append` ones.
    pub(super) slots: u32,
    /// Where a member rule's conversions start in `Family::op_steps`.
    pub(super) steps: u32,
    pub(super) step_count: u16,
    pub(super) ecs: u16,
    pub(super) append: u16,
    /// The LEEF key's index, or `Op::NONE`.
    pub(super) leef: u16,
    /// The id of the rule's condition, or `Op::NONE` (also for ids beyond `u16`, which then
    /// take the general path).
    pub(super) when: u16,
    pub(super) required: bool,
}

/// What [`Op::compile`] makes of a family's rules.
#[derive(Debug, Default)]
pub(super) struct CompiledOps {
    pub ops: Vec<Op>,
    pub slots: Vec<u32>,
    pub steps: Vec<Step>,
    pub leef_names: Vec<String>,
}

impl Op {
    pub(super) const GENERAL: u32 = u32::MAX;
    pub(super) const NONE: u16 = u16::MAX;

    pub(super) fn compile(rules: &[Rule]) -> Result<CompiledOps, String> {
        let too_many = |what: &str| format!("more than 65,534 {what} in one family");
        let small = |n: usize, what: &str| {
            u16::try_from(n)
                .ok()
                .filter(|&n| n != Op::NONE)
                .ok_or_else(|| too_many(what))
        };
        let mut out = CompiledOps::default();
        for r in rules {
            let slots = u32::try_from(out.slots.len()).map_err(|_| too_many("ECS targets"))?;
            out.slots
                .extend(r.ecs.iter().chain(&r.append).map(|&s| s as u32));
            let leef = match &r.leef {
                Some((key, i)) => {
                    if out.leef_names.len() <= *i {
                        out.leef_names.resize(i + 1, String::new());
                    }
                    out.leef_names[*i].clone_from(key);
                    small(*i, "LEEF keys")?
                }
                None => Op::NONE,
            };
            let member = match r.sources.as_slice() {
                [Source::Member(i, rest)]
                    if rest.is_empty()
                        && r.when.is_none()
                        && r.regex.is_none()
                        && r.default.is_none() =>
                {
                    u32::try_from(*i)
                        .ok()
                        .filter(|&m| m != Op::GENERAL)
                        .ok_or_else(|| too_many("members"))?
                }
                _ => Op::GENERAL,
            };
            let steps = u32::try_from(out.steps.len()).map_err(|_| too_many("conversions"))?;
            if member != Op::GENERAL {
                out.steps.extend(r.steps.iter().cloned());
            }
            out.ops.push(Op {
                member,
                slots,
                steps,
                step_count: small(out.steps.len() - steps as usize, "conversions of a field")?,
                ecs: small(r.ecs.len(), "targets of a field")?,
                append: small(r.append.len(), "targets of a field")?,
                leef,
                when: r
                    .when
                    .as_ref()
                    .and_then(|(_, id)| u16::try_from(*id).ok())
                    .unwrap_or(Op::NONE),
                required: r.required,
            });
        }
        Ok(out)
    }
}
