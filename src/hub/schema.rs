//! The hub's own table of the 19 WebSocket message schemas and its validator.
//!
//! Works on raw `serde_json::Value` only and shares nothing with the sidecar's typed protocol,
//! so a mistake in one cannot hide the same mistake in the other.

use serde_json::{json, Map, Value};

/// The type a schema field must have (strict: no coercion between types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A JSON string.
    Str,
    /// A JSON integer; floats are rejected.
    Int,
    /// Any JSON number, integer or float.
    Num,
    /// A JSON object.
    Map,
    /// A JSON array with any items.
    List,
    /// A JSON array whose items must all be strings.
    ListOfStr,
    /// A JSON array whose items must all be objects.
    ListOfMap,
}

use FieldType::{Int, List, ListOfMap, ListOfStr, Map as Obj, Num, Str};

/// One message type's schema: required and optional fields with their types.
#[derive(Debug)]
pub struct Schema {
    /// The `type` value this schema applies to.
    pub name: &'static str,
    /// Fields that must be present and non-null.
    pub required: &'static [(&'static str, FieldType)],
    /// Fields checked only when present and non-null.
    pub optional: &'static [(&'static str, FieldType)],
}

const fn schema(
    name: &'static str,
    required: &'static [(&'static str, FieldType)],
    optional: &'static [(&'static str, FieldType)],
) -> Schema {
    Schema {
        name,
        required,
        optional,
    }
}

/// The 19 message types the hub knows, sorted by name (the order of `known_types`).
///
/// Sources: §2.2 (identify), §4 (the task-side types) and §2.4 of the reference. Where the
/// reference gives no schema (`message`, `status`, the `channel_*` types, `ollama_report`,
/// `resource_report`'s non-number fields) the choice below is ours: the fields a client of
/// that request obviously needs are required, everything else is optional.
pub const SCHEMAS: [Schema; 19] = [
    // Our choice: a channel name is required; paging fields optional.
    schema(
        "channel_history",
        &[("channel", Str)],
        &[("limit", Int), ("since", Int)],
    ),
    // Our choice: channel and payload required, like `message`.
    schema(
        "channel_publish",
        &[("channel", Str), ("payload", Obj)],
        &[("message_type", Str), ("reply_to", Str)],
    ),
    schema("channel_subscribe", &[("channel", Str)], &[]),
    schema("channel_unsubscribe", &[("channel", Str)], &[]),
    schema(
        "identify",
        &[("agent_id", Str), ("token", Str)],
        &[
            ("name", Str),
            ("status", Str),
            ("capabilities", ListOfStr),
            ("ollama_url", Str),
        ],
    ),
    schema("list_agents", &[], &[]),
    schema("list_channels", &[], &[]),
    // Our choice: a payload object is required; `to` (direct message) and the rest optional.
    schema(
        "message",
        &[("payload", Obj)],
        &[("to", Str), ("message_type", Str), ("reply_to", Str)],
    ),
    // Our choice: nothing required; the endpoint description is optional.
    schema(
        "ollama_report",
        &[],
        &[
            ("host", Str),
            ("port", Int),
            ("ollama_url", Str),
            ("models", List),
        ],
    ),
    schema("ping", &[], &[]),
    schema(
        "resource_report",
        &[],
        &[
            ("agent_id", Str),
            ("cpu_percent", Num),
            ("ram_used_bytes", Num),
            ("ram_total_bytes", Num),
            ("vram_used_bytes", Num),
            ("vram_total_bytes", Num),
            ("timestamp", Num),
        ],
    ),
    schema(
        "state_report",
        &[("task_id", Str)],
        &[("status", Str), ("generation", Int), ("assigned_at", Num)],
    ),
    // Our choice: the new status string is required.
    schema("status", &[("status", Str)], &[]),
    schema("task_accepted", &[("task_id", Str)], &[]),
    schema(
        "task_complete",
        &[("task_id", Str), ("generation", Int)],
        &[
            ("result", Obj),
            ("tokens_used", Int),
            ("verification_report", Obj),
            ("verification_history", ListOfMap),
        ],
    ),
    schema(
        "task_failed",
        &[("task_id", Str), ("generation", Int)],
        &[("error", Str), ("reason", Str)],
    ),
    schema(
        "task_progress",
        &[("task_id", Str)],
        &[("progress", Int), ("execution_event", Obj)],
    ),
    schema("task_recovering", &[("task_id", Str)], &[]),
    schema(
        "wake_result",
        &[("task_id", Str), ("status", Str)],
        &[("attempt", Int), ("error", Str), ("reason", Str)],
    ),
];

/// String length limits (in characters) of §2.4; they apply to schema fields of these names.
pub const LENGTH_LIMITS: [(&str, usize); 10] = [
    ("agent_id", 128),
    ("description", 10000),
    ("status", 256),
    ("channel", 64),
    ("token", 256),
    ("error", 2000),
    ("reason", 2000),
    ("name", 256),
    ("repo", 512),
    ("ollama_url", 512),
];

/// Finds the schema for a message type name.
pub fn lookup(name: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.name == name)
}

/// The names of all known types, sorted, as the hub lists them in `known_types`.
pub fn known_types() -> Vec<Value> {
    SCHEMAS.iter().map(|s| Value::from(s.name)).collect()
}

/// Validates a decoded JSON object; returns its type name, or the complete
/// `validation_failed` error frame the hub sends back.
pub fn validate(msg: &Map<String, Value>) -> Result<&'static str, Value> {
    let schema = match msg.get("type") {
        None | Some(Value::Null) => {
            return Err(failed(Value::from("unknown"), vec![required("type")]));
        }
        Some(Value::String(name)) => match lookup(name) {
            Some(s) => s,
            None => return Err(failed(Value::from(name.as_str()), vec![unknown_type(name)])),
        },
        Some(other) => {
            return Err(failed(other.clone(), vec![wrong_type("type", Str, other)]));
        }
    };
    let mut errors = Vec::new();
    for (field, ty) in schema.required {
        match msg.get(*field) {
            None | Some(Value::Null) => errors.push(required(field)),
            Some(v) => check_field(field, *ty, v, &mut errors),
        }
    }
    for (field, ty) in schema.optional {
        match msg.get(*field) {
            None | Some(Value::Null) => {}
            Some(v) => check_field(field, *ty, v, &mut errors),
        }
    }
    if errors.is_empty() {
        Ok(schema.name)
    } else {
        Err(failed(Value::from(schema.name), errors))
    }
}

fn check_field(field: &str, ty: FieldType, v: &Value, errors: &mut Vec<Value>) {
    let item_ty = match ty {
        ListOfStr => Some(Str),
        ListOfMap => Some(Obj),
        _ => None,
    };
    if !has_type(ty, v) {
        errors.push(wrong_type(field, ty, v));
        return;
    }
    if let (Some(item_ty), Value::Array(items)) = (item_ty, v) {
        for (i, item) in items.iter().enumerate() {
            if !has_type(item_ty, item) {
                errors.push(wrong_type(&format!("{field}[{i}]"), item_ty, item));
            }
        }
    }
    if let Value::String(s) = v {
        if let Some((_, max)) = LENGTH_LIMITS.iter().find(|(name, _)| *name == field) {
            if s.chars().count() > *max {
                errors.push(too_long(field, *max, s));
            }
        }
    }
}

fn has_type(ty: FieldType, v: &Value) -> bool {
    match ty {
        Str => v.is_string(),
        Int => v.is_i64() || v.is_u64(),
        Num => v.is_number(),
        Obj => v.is_object(),
        List | ListOfStr | ListOfMap => v.is_array(),
    }
}

fn type_label(ty: FieldType) -> &'static str {
    match ty {
        Str => "string",
        Int => "integer",
        Num => "number",
        // As recorded (task_progress_execution_event, task_complete_with_verification).
        Obj => "object",
        List | ListOfStr | ListOfMap => "list",
    }
}

/// The name the hub gives the JSON type of a value ("string", "integer", ...).
fn value_label(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn failed(message_type: Value, errors: Vec<Value>) -> Value {
    json!({"type": "error", "error": "validation_failed", "message_type": message_type, "errors": errors})
}

fn required(field: &str) -> Value {
    json!({"field": field, "error": "required", "detail": "field is required"})
}

fn unknown_type(name: &str) -> Value {
    json!({"field": "type", "error": "unknown_message_type",
        "detail": format!("unknown message type '{name}'"), "known_types": known_types()})
}

fn wrong_type(field: &str, ty: FieldType, v: &Value) -> Value {
    let detail = format!("expected {}, got {}", type_label(ty), value_label(v));
    json!({"field": field, "error": "wrong_type", "detail": detail, "value": v})
}

fn too_long(field: &str, max: usize, s: &str) -> Value {
    let head: String = s.chars().take(50).collect();
    json!({"field": field, "error": "too_long",
        "detail": format!("exceeds maximum length of {max} characters"), "value": format!("{head}...")})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<&'static str, Value> {
        validate(v.as_object().expect("object"))
    }

    #[test]
    fn table_is_sorted_and_complete() {
        let names: Vec<&str> = SCHEMAS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 19);
    }

    #[test]
    fn valid_messages_pass_and_unknown_fields_are_ignored() {
        assert_eq!(check(json!({"type":"ping","extra":1})), Ok("ping"));
        let ok = json!({"type":"task_complete","task_id":"t","generation":1,"result":null});
        assert_eq!(check(ok), Ok("task_complete"));
        let num = json!({"type":"state_report","task_id":"t","assigned_at":1.5});
        assert_eq!(check(num), Ok("state_report"));
    }

    #[test]
    fn missing_and_nonstring_type() {
        let e = check(json!({"task_id":"x"})).unwrap_err();
        assert_eq!(e["message_type"], "unknown");
        assert_eq!(
            e["errors"][0],
            json!({"detail":"field is required","error":"required","field":"type"})
        );
        let e = check(json!({"type":42})).unwrap_err();
        assert_eq!(e["message_type"], 42);
        assert_eq!(e["errors"][0]["detail"], "expected string, got integer");
        assert_eq!(e["errors"][0]["value"], 42);
    }

    #[test]
    fn unknown_type_lists_known_types() {
        let e = check(json!({"type":"task_rejected"})).unwrap_err();
        assert_eq!(e["errors"][0]["detail"], "unknown message type 'task_rejected'");
        assert_eq!(e["errors"][0]["known_types"].as_array().map(Vec::len), Some(19));
    }

    #[test]
    fn integer_rejects_float_and_string() {
        let e = check(json!({"type":"task_failed","task_id":"t","generation":1.0})).unwrap_err();
        assert_eq!(e["errors"][0]["detail"], "expected integer, got float");
        let e = check(json!({"type":"task_failed","task_id":"t","generation":"1"})).unwrap_err();
        assert_eq!(e["errors"][0]["detail"], "expected integer, got string");
        assert_eq!(e["errors"][0]["value"], "1");
    }

    #[test]
    fn an_object_field_says_expected_object() {
        let frame = check(json!({"type":"task_progress","task_id":"t","execution_event":"token"}))
            .expect_err("a string is not an object");
        assert_eq!(frame["errors"][0]["detail"], "expected object, got string");
        let frame = check(json!({"type":"task_complete","task_id":"t","generation":1,
            "verification_report":"pass"}))
        .expect_err("wrong_type");
        assert_eq!(frame["errors"][0]["error"], "wrong_type");
        assert_eq!(frame["errors"][0]["field"], "verification_report");
        let frame = check(json!({"type":"task_complete","task_id":"t","generation":1,
            "verification_history":[{"run_number":1}, "x"]}))
        .expect_err("wrong_type");
        assert_eq!(frame["errors"][0]["error"], "wrong_type");
        assert!(check(json!({"type":"task_progress","task_id":"t","progress":50})).is_ok());
        let frame =
            check(json!({"type":"task_progress","task_id":"t","progress":"50"})).expect_err("wrong_type");
        assert_eq!(frame["errors"][0]["field"], "progress");
    }

    #[test]
    fn list_items_and_lengths() {
        let e = check(json!({"type":"identify","agent_id":"a","token":"t","capabilities":["code",5]}))
            .unwrap_err();
        assert_eq!(e["errors"][0]["field"], "capabilities[1]");
        let long = "é".repeat(2001);
        let e = check(json!({"type":"task_failed","task_id":"t","generation":1,"reason":long})).unwrap_err();
        assert_eq!(e["errors"][0]["error"], "too_long");
        assert_eq!(e["errors"][0]["value"], format!("{}...", "é".repeat(50)));
        let fits = "r".repeat(2000);
        assert!(check(json!({"type":"task_failed","task_id":"t","generation":1,"reason":fits})).is_ok());
    }

    #[test]
    fn null_required_is_required_null_optional_is_absent() {
        let e = check(json!({"type":"task_accepted","task_id":null})).unwrap_err();
        assert_eq!(e["errors"][0]["error"], "required");
        assert!(check(json!({"type":"task_progress","task_id":"t","progress":null})).is_ok());
    }
}
