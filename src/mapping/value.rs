//! Values as the mapping engine carries them between a record and the formatters. The steps that
//! convert them are in `steps.rs`.

use std::borrow::Cow;

use super::time::Timestamp;
use crate::json::{Json, Text};

/// A mapped value. Borrowed from the record or the mapping set where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Text<'a>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Time(Timestamp),
    /// Objects (and arrays of objects) carried as JSON.
    Json(JsonVal<'a>),
    List(Vec<Val<'a>>),
}

/// A JSON object or array inside a value: borrowed from the record, or parsed by the engine.
/// (Not a `Cow`: `Cow<Json>` would make `Val` invariant in its lifetime.)
#[derive(Debug, Clone, PartialEq)]
pub enum JsonVal<'a> {
    Borrowed(&'a Json<'a>),
    Owned(Json<'static>),
}

impl<'a> std::ops::Deref for JsonVal<'a> {
    type Target = Json<'a>;
    fn deref(&self) -> &Json<'a> {
        match self {
            JsonVal::Borrowed(j) => j,
            JsonVal::Owned(j) => j,
        }
    }
}

impl<'a> Val<'a> {
    /// The value of a JSON node; `null`, `""`, `[]` and `{}` are absent.
    pub fn from_json(v: &'a Json<'a>) -> Option<Val<'a>> {
        match v {
            Json::Null => None,
            Json::Str(s) if s.is_empty() => None,
            Json::Str(s) => Some(Val::Str(s.reborrow())),
            Json::Bool(b) => Some(Val::Bool(*b)),
            Json::Int(i) => Some(Val::Int(*i)),
            Json::UInt(u) => Some(Val::UInt(*u)),
            Json::Float(f) => Some(Val::Float(*f)),
            Json::Array(a) if a.is_empty() => None,
            Json::Array(a) if a.iter().all(is_scalar) => {
                let items: Vec<_> = a.iter().filter_map(Val::from_json).collect();
                (!items.is_empty()).then_some(Val::List(items))
            }
            Json::Object(o) if o.is_empty() => None,
            other => Some(Val::Json(JsonVal::Borrowed(other))),
        }
    }

    /// Same as [`Val::from_json`] for a value the engine owns (JSON parsed out of a string).
    pub fn from_owned_json(v: Json<'static>) -> Option<Val<'static>> {
        match v {
            Json::Str(s) if !s.is_empty() => Some(Val::Str(s)),
            Json::Array(a) if !a.is_empty() && a.iter().all(is_scalar) => {
                let items: Vec<_> = a.into_iter().filter_map(Val::from_owned_json).collect();
                (!items.is_empty()).then_some(Val::List(items))
            }
            Json::Object(ref o) if !o.is_empty() => Some(Val::Json(JsonVal::Owned(v))),
            Json::Array(ref a) if !a.is_empty() => Some(Val::Json(JsonVal::Owned(v))),
            Json::Bool(b) => Some(Val::Bool(b)),
            Json::Int(i) => Some(Val::Int(i)),
            Json::UInt(u) => Some(Val::UInt(u)),
            Json::Float(f) => Some(Val::Float(f)),
            _ => None,
        }
    }

    pub fn into_owned(self) -> Val<'static> {
        match self {
            Val::Str(s) => Val::Str(s.into_owned()),
            Val::Int(i) => Val::Int(i),
            Val::UInt(u) => Val::UInt(u),
            Val::Float(f) => Val::Float(f),
            Val::Bool(b) => Val::Bool(b),
            Val::Time(t) => Val::Time(t),
            Val::Json(j) => Val::Json(JsonVal::Owned((*j).clone().into_owned())),
            Val::List(l) => Val::List(l.into_iter().map(Val::into_owned).collect()),
        }
    }

    /// Text form, as LEEF and string conversions show it.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::Int(i) => Cow::Owned(i.to_string()),
            Val::UInt(u) => Cow::Owned(u.to_string()),
            Val::Float(f) => Cow::Owned(f.to_string()),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Val::Time(t) => Cow::Owned(t.iso_millis()),
            Val::Json(j) => Cow::Owned(j.to_string()),
            Val::List(items) => {
                let parts: Vec<_> = items.iter().map(|v| v.to_text().into_owned()).collect();
                Cow::Owned(parts.join(","))
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn is_scalar(x: &Json) -> bool {
    !matches!(x, Json::Object(_) | Json::Array(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_empty_and_empty_array_are_absent() {
        for v in [
            Json::Null,
            Json::Str(Text::from("")),
            Json::Array(vec![]),
            Json::Object(vec![]),
        ] {
            assert!(Val::from_json(&v).is_none(), "{v}");
        }
    }
}
