//! AMQP field tables (message headers, arguments) to JSON and back, so tests can compare
//! headers with `serde_json::json!` values.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde_json::{Number, Value};

/// Converts a field table into a map of JSON values (see [`value_to_json`]).
pub fn table_to_json(table: &FieldTable) -> BTreeMap<String, Value> {
    table.inner().iter().map(|(key, value)| (key.as_str().to_owned(), value_to_json(value))).collect()
}

/// Converts one AMQP value to JSON: booleans, integers, floats and timestamps map to their
/// JSON counterparts; decimals to a float; strings (decoded as UTF-8, lossily) to strings;
/// arrays and tables recursively; byte arrays to arrays of numbers; void to `null`.
pub fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(table) => Value::Object(table_to_json(table).into_iter().collect()),
        AMQPValue::ByteArray(bytes) => Value::Array(bytes.as_slice().iter().map(|b| Value::from(*b)).collect()),
        AMQPValue::Void => Value::Null,
    }
}

/// A JSON number for `f`, or `null` for NaN and infinities (which JSON cannot hold).
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Builds a field table from a JSON object, for publishing messages with headers.
///
/// Strings become long strings, booleans booleans, integers 64-bit signed integers (unsigned
/// ones above `i64::MAX` become timestamps), other numbers doubles, arrays field arrays,
/// objects nested tables and `null` void.
///
/// # Panics
/// When `object` is not a JSON object.
pub fn json_to_table(object: &Value) -> FieldTable {
    let Value::Object(entries) = object else {
        panic!("headers must be a JSON object, got {object}");
    };
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(key.as_str().into(), json_to_value(value));
    }
    table
}

/// Converts one JSON value as described in [`json_to_table`].
fn json_to_value(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(u)) => AMQPValue::Timestamp(u),
            _ => AMQPValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => {
            AMQPValue::FieldArray(FieldArray::from(items.iter().map(json_to_value).collect::<Vec<_>>()))
        }
        Value::Object(_) => AMQPValue::FieldTable(json_to_table(value)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trips_through_a_field_table() {
        let headers = json!({
            "x-retries": 3,
            "tenant": "acme",
            "flags": [true, null, 1.5],
            "nested": {"a": "b"}
        });
        let back = table_to_json(&json_to_table(&headers));
        assert_eq!(Value::Object(back.into_iter().collect()), headers);
    }
}
