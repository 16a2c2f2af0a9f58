//! The real hub's validation of HTTP bodies (`Validation.validate_http/2`, then
//! `validate_enrichment_fields/1` for tasks): strict types, the §2.4 length limits, and error
//! entries `{field, error, detail, value?}` in the hub's order (required fields, then optional
//! ones, each sorted by name). Its own table, like [`super::schema`] for the WebSocket.

use serde_json::{json, Map, Value};

use super::complexity::TIERS;
use super::schema::LENGTH_LIMITS;

/// The type a body field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HType {
    /// A JSON string.
    Str,
    /// A JSON integer (no floats).
    Int,
    /// A JSON object.
    Obj,
    /// true or false.
    Bool,
    /// An array of strings.
    ListStr,
    /// An array of objects.
    ListObj,
}

use HType::{Bool, Int, ListObj, ListStr, Obj, Str};

/// `POST /api/tasks`: required fields.
pub const POST_TASK_REQUIRED: &[(&str, HType)] = &[("description", Str)];
/// `POST /api/tasks`: optional fields, sorted by name (the real schema's 14).
pub const POST_TASK_OPTIONAL: &[(&str, HType)] = &[
    ("branch", Str),
    ("complete_by", Int),
    ("complexity_tier", Str),
    ("file_hints", ListObj),
    ("max_retries", Int),
    ("max_verification_retries", Int),
    ("metadata", Obj),
    ("needed_capabilities", ListStr),
    ("priority", Str),
    ("repo", Str),
    ("skip_verification", Bool),
    ("success_criteria", ListStr),
    ("verification_steps", ListObj),
    ("verification_timeout_ms", Int),
];

/// The name the hub gives a JSON value's type in `detail`.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn item_name(ty: HType) -> &'static str {
    match ty {
        Str | ListStr => "string",
        Int => "integer",
        Obj | ListObj => "object",
        Bool => "boolean",
    }
}

fn has(ty: HType, v: &Value) -> bool {
    match ty {
        Str => v.is_string(),
        Int => v.is_i64() || v.is_u64(),
        Obj => v.is_object(),
        Bool => v.is_boolean(),
        ListStr | ListObj => v.is_array(),
    }
}

/// One error entry.
pub fn entry(field: &str, error: &str, detail: &str, value: Option<&Value>) -> Value {
    let mut e = json!({"field": field, "error": error, "detail": detail});
    if let Some(v) = value {
        e["value"] = v.clone();
    }
    e
}

/// The 422 body `{"error":"validation_failed","errors":[…]}`.
pub fn failed(errors: Vec<Value>) -> Value {
    json!({"error": "validation_failed", "errors": errors})
}

fn check_field(field: &str, ty: HType, v: &Value, errors: &mut Vec<Value>) {
    if !has(ty, v) {
        let expected = match ty {
            ListStr | ListObj => "array",
            other => item_name(other),
        };
        let detail = format!("expected {expected}, got {}", type_name(v));
        errors.push(entry(field, "wrong_type", &detail, Some(v)));
    } else if let (ListStr | ListObj, Value::Array(items)) = (ty, v) {
        // Only the first bad item is named.
        let want = if ty == ListStr { Str } else { Obj };
        if let Some((i, bad)) = items.iter().enumerate().find(|(_, item)| !has(want, item)) {
            let detail = format!("expected {}, got {}", item_name(want), type_name(bad));
            errors.push(entry(&format!("{field}[{i}]"), "wrong_type", &detail, Some(bad)));
        }
    }
    if let Value::String(s) = v {
        if let Some((_, max)) = LENGTH_LIMITS.iter().find(|(name, _)| *name == field) {
            if s.chars().count() > *max {
                let head: String = s.chars().take(50).collect();
                let detail = format!("exceeds maximum length of {max} characters");
                errors.push(entry(
                    field,
                    "too_long",
                    &detail,
                    Some(&json!(format!("{head}..."))),
                ));
            }
        }
    }
}

/// Checks `params` against a schema; the error entries, empty when it passes.
pub fn check(
    params: &Map<String, Value>,
    required: &[(&str, HType)],
    optional: &[(&str, HType)],
) -> Vec<Value> {
    let mut errors = Vec::new();
    for (field, ty) in required {
        match params.get(*field) {
            None | Some(Value::Null) => errors.push(entry(field, "required", "field is required", None)),
            Some(v) => check_field(field, *ty, v, &mut errors),
        }
    }
    for (field, ty) in optional {
        if let Some(v) = params.get(*field).filter(|v| !v.is_null()) {
            check_field(field, *ty, v, &mut errors);
        }
    }
    errors
}

/// The second pass on a task body that passed [`check`]: each file hint needs a non-empty
/// `path` (and a string `reason` if any), each verification step a non-empty `type` and
/// `target` (and a string `description` if any), and `complexity_tier` must name a tier.
pub fn enrichment(params: &Map<String, Value>) -> Vec<Value> {
    let mut errors = Vec::new();
    let non_empty =
        |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let string_if_present = |o: &Map<String, Value>, k: &str| o.get(k).is_none_or(Value::is_string);
    for (i, hint) in list(params, "file_hints").iter().enumerate() {
        let Some(h) = hint.as_object() else { continue };
        if !non_empty(h, "path") {
            let field = format!("file_hints[{i}].path");
            errors.push(entry(
                &field,
                "required",
                "file hint must have a non-empty string 'path'",
                None,
            ));
        } else if !string_if_present(h, "reason") {
            let detail = format!("expected string, got {}", type_name(&h["reason"]));
            errors.push(entry(
                &format!("file_hints[{i}].reason"),
                "wrong_type",
                &detail,
                None,
            ));
        }
    }
    for (i, step) in list(params, "verification_steps").iter().enumerate() {
        let Some(s) = step.as_object() else { continue };
        let field = |k: &str| format!("verification_steps[{i}].{k}");
        if !non_empty(s, "type") {
            let detail = "verification step must have a non-empty string 'type'";
            errors.push(entry(&field("type"), "required", detail, None));
        } else if !non_empty(s, "target") {
            let detail = "verification step must have a non-empty string 'target'";
            errors.push(entry(&field("target"), "required", detail, None));
        } else if !string_if_present(s, "description") {
            let detail = format!("expected string, got {}", type_name(&s["description"]));
            errors.push(entry(&field("description"), "wrong_type", &detail, None));
        }
    }
    if let Some(tier) = params.get("complexity_tier").and_then(Value::as_str) {
        if let Some(e) = tier_error(tier) {
            errors.push(e);
        }
    }
    errors
}

/// The error entry for a `complexity_tier` that names no tier.
pub fn tier_error(tier: &str) -> Option<Value> {
    (!TIERS.contains(&tier)).then(|| {
        let detail = format!("must be one of: {}", TIERS.join(", "));
        entry("complexity_tier", "invalid_value", &detail, Some(&json!(tier)))
    })
}

/// A `warnings` entry for more than 10 verification steps (the hub's soft limit).
pub fn step_warning(steps: usize) -> Option<String> {
    (steps > 10).then(|| {
        format!(
            "Task has {steps} verification steps (soft limit: 10). Consider splitting into smaller tasks."
        )
    })
}

fn list<'a>(params: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    params
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn schema_errors_come_in_the_hubs_order_and_shape() {
        let params = obj(
            json!({"priority": 1, "needed_capabilities": ["a", 5, 6], "metadata": [],
            "complete_by": 1.5, "skip_verification": "yes"}),
        );
        let errors = check(&params, POST_TASK_REQUIRED, POST_TASK_OPTIONAL);
        let fields: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "description",
                "complete_by",
                "metadata",
                "needed_capabilities[1]",
                "priority",
                "skip_verification"
            ]
        );
        assert_eq!(
            errors[0],
            json!({"field": "description", "error": "required", "detail": "field is required"})
        );
        assert_eq!(errors[1]["detail"], "expected integer, got float");
        assert_eq!(errors[2]["detail"], "expected object, got array");
        assert_eq!(errors[3]["value"], 5);
        assert_eq!(errors[5]["detail"], "expected boolean, got string");
        let long = obj(json!({"description": "d".repeat(10_001)}));
        let errors = check(&long, POST_TASK_REQUIRED, POST_TASK_OPTIONAL);
        assert_eq!(errors[0]["error"], "too_long");
        assert_eq!(errors[0]["value"], format!("{}...", "d".repeat(50)));
    }

    #[test]
    fn enrichment_checks_hints_steps_and_tier() {
        let params = obj(
            json!({"file_hints": [{"path": "a"}, {"path": ""}, {"path": "b", "reason": 1}],
            "verification_steps": [{"type": "x", "target": "y"}, {"type": "x"}, {"target": "y"}],
            "complexity_tier": "huge"}),
        );
        let fields: Vec<String> = enrichment(&params)
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["field"].as_str().unwrap(),
                    e["error"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                "file_hints[1].path:required",
                "file_hints[2].reason:wrong_type",
                "verification_steps[1].target:required",
                "verification_steps[2].type:required",
                "complexity_tier:invalid_value"
            ]
        );
        assert!(step_warning(10).is_none());
        assert!(step_warning(11)
            .unwrap()
            .starts_with("Task has 11 verification steps"));
    }
}
