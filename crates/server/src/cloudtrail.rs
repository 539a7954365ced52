//! CloudTrail's `LookupEvents` (JSON 1.1 protocol, `X-Amz-Target`) over the audit events in the
//! store. Until a policy engine exists only the account's root may call it; it sees its own
//! account's events only.

use crate::app::App;
use crate::caller::Caller;
use keyward_protocol::ApiError;
use keyward_store::{EventFilter, EventQuery, StoreError, MAX_EVENTS_PER_PAGE};
use serde_json::{json, Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `X-Amz-Target` prefix of CloudTrail operations.
pub(crate) const TARGET_PREFIX: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.";

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(400, code, message)
}

/// The operation a CloudTrail target names, if it is one.
pub(crate) fn operation(target: &str) -> Option<&str> {
    target.strip_prefix(TARGET_PREFIX)
}

/// Answers one CloudTrail operation with its JSON body.
pub(crate) async fn handle(
    app: &App,
    caller: &Caller,
    op: &str,
    body: &[u8],
) -> Result<String, ApiError> {
    if op != "LookupEvents" {
        return Err(ApiError::new(
            400,
            "UnknownOperationException",
            format!("The operation {TARGET_PREFIX}{op} is not supported by keyward."),
        ));
    }
    if !caller.is_root() {
        return Err(bad(
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: cloudtrail:LookupEvents because no identity-based policy allows the cloudtrail:LookupEvents action",
                caller.arn()
            ),
        ));
    }
    let req = parse_body(body)?;
    let q = lookup_query(caller.account_id(), &req)?;
    let Some(q) = q else {
        // Only Insights events were asked for, and keyward has none.
        return Ok(json!({"Events": []}).to_string());
    };
    let page = app.store().lookup_events(&q).await.map_err(|e| match e {
        StoreError::InvalidInput(_) => bad("InvalidNextTokenException", "Invalid NextToken"),
        other => app.store_error(other),
    })?;
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            let secs = e
                .time
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as f64
                / 1000.0;
            let body = crate::audit::cloudtrail_json(&e.as_event());
            let mut m = Map::new();
            m.insert("EventId".into(), e.event_id.clone().into());
            m.insert("EventName".into(), e.event_name.clone().into());
            m.insert("ReadOnly".into(), e.read_only.to_string().into());
            if let Some(k) = &e.access_key_id {
                m.insert("AccessKeyId".into(), k.clone().into());
            }
            m.insert("EventTime".into(), json!(secs));
            m.insert("EventSource".into(), e.event_source.clone().into());
            let username = e
                .user_name
                .clone()
                .or_else(|| username_of(&body))
                .map_or(Value::Null, Value::String);
            m.insert("Username".into(), username);
            m.insert("Resources".into(), Value::Array(resources(&body)));
            m.insert("CloudTrailEvent".into(), body.into());
            Value::Object(m)
        })
        .collect();
    let mut out = Map::new();
    out.insert("Events".into(), Value::Array(events));
    if let Some(t) = page.next_token {
        out.insert("NextToken".into(), t.into());
    }
    Ok(Value::Object(out).to_string())
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad(
            "SerializationException",
            "Start of structure or map found where not expected.",
        )),
    }
}

fn time_of(v: &Value, name: &str) -> Result<Option<SystemTime>, ApiError> {
    let secs = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if (0.0..1.0e11).contains(&s) => Ok(Some(
            UNIX_EPOCH + Duration::from_millis((s * 1000.0).round() as u64),
        )),
        _ => Err(bad(
            "SerializationException",
            format!("Invalid value for {name}"),
        )),
    }
}

/// The store query for a request; `None` when no event can match (Insights only).
fn lookup_query(account: &str, req: &Map<String, Value>) -> Result<Option<EventQuery>, ApiError> {
    let max_results = match req.get("MaxResults") {
        None | Some(Value::Null) => MAX_EVENTS_PER_PAGE,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_EVENTS_PER_PAGE as i64).contains(&n) => n as usize,
            _ => return Err(bad(
                "InvalidMaxResultsException",
                "Value for parameter MaxResults is not valid. MaxResults must be between 1 and 50.",
            )),
        },
    };
    let start = time_of(req.get("StartTime").unwrap_or(&Value::Null), "StartTime")?;
    let end = time_of(req.get("EndTime").unwrap_or(&Value::Null), "EndTime")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(bad(
                "InvalidTimeRangeException",
                "Start time must be before end time.",
            ));
        }
    }
    let filter = match req.get("LookupAttributes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => match list.as_slice() {
            [] => None,
            [one] => Some(attribute(one)?),
            _ => {
                return Err(bad(
                    "InvalidLookupAttributesException",
                    "You can only specify one lookup attribute.",
                ))
            }
        },
        Some(_) => {
            return Err(bad(
                "SerializationException",
                "Invalid value for LookupAttributes",
            ))
        }
    };
    let next_token = match req.get("NextToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(bad("InvalidNextTokenException", "Invalid NextToken")),
    };
    match req.get("EventCategory") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c == "insight" => return Ok(None),
        Some(_) => {
            return Err(bad(
                "InvalidEventCategoryException",
                "Event category is not valid. Valid value is insight.",
            ))
        }
    }
    Ok(Some(EventQuery {
        account_id: account.to_owned(),
        filter,
        start,
        end,
        max_results,
        next_token,
    }))
}

fn attribute(v: &Value) -> Result<EventFilter, ApiError> {
    let invalid = |m: &str| bad("InvalidLookupAttributesException", m.to_owned());
    let key = v.get("AttributeKey").and_then(Value::as_str).unwrap_or("");
    let value = v.get("AttributeValue").and_then(Value::as_str);
    let Some(value) = value.filter(|s| !s.is_empty()) else {
        return Err(invalid("The lookup attribute value must not be empty."));
    };
    if value.chars().count() > 2000 {
        return Err(invalid(
            "The lookup attribute value must be at most 2000 characters.",
        ));
    }
    let value = value.to_owned();
    Ok(match key {
        "AccessKeyId" => EventFilter::AccessKeyId(value),
        "Username" => EventFilter::Username(value),
        "EventName" => EventFilter::EventName(value),
        "EventId" => EventFilter::EventId(value),
        "EventSource" => EventFilter::EventSource(value),
        "ReadOnly" => match value.as_str() {
            "true" => EventFilter::ReadOnly(true),
            "false" => EventFilter::ReadOnly(false),
            _ => {
                return Err(invalid(
                    "The value for the ReadOnly lookup attribute must be true or false.",
                ))
            }
        },
        "ResourceType" | "ResourceName" => {
            return Err(invalid(
                "keyward does not support lookups by ResourceType or ResourceName.",
            ))
        }
        _ => return Err(invalid("The lookup attribute key is not valid.")),
    })
}

/// For root and failed calls, CloudTrail's `Username` is `root` or absent.
fn username_of(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    (v["userIdentity"]["type"] == "Root").then(|| "root".to_owned())
}

/// The IAM resources an event names (its user and access key parameters).
fn resources(body: &str) -> Vec<Value> {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let p = &v["requestParameters"];
    let mut out = Vec::new();
    if let Some(u) = p["userName"].as_str() {
        out.push(json!({"ResourceType": "AWS::IAM::User", "ResourceName": u}));
    }
    if let Some(k) = p["accessKeyId"].as_str() {
        out.push(json!({"ResourceType": "AWS::IAM::AccessKey", "ResourceName": k}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(body: &str) -> Result<Option<EventQuery>, ApiError> {
        lookup_query("123456789012", &parse_body(body.as_bytes()).unwrap())
    }

    fn code(body: &str) -> String {
        q(body).unwrap_err().code.to_string()
    }

    #[test]
    fn requests_are_checked_like_cloudtrail() {
        let ok = q(r#"{"LookupAttributes":[{"AttributeKey":"AccessKeyId","AttributeValue":"AKIAX"}],"MaxResults":5,"StartTime":1.5,"EndTime":2}"#).unwrap().unwrap();
        assert_eq!(ok.filter, Some(EventFilter::AccessKeyId("AKIAX".into())));
        assert_eq!(ok.max_results, 5);
        assert_eq!(ok.start, Some(UNIX_EPOCH + Duration::from_millis(1500)));
        assert_eq!(q("{}").unwrap().unwrap().max_results, 50);
        assert_eq!(code(r#"{"MaxResults":51}"#), "InvalidMaxResultsException");
        assert_eq!(code(r#"{"MaxResults":0}"#), "InvalidMaxResultsException");
        assert_eq!(
            code(r#"{"StartTime":3,"EndTime":2}"#),
            "InvalidTimeRangeException"
        );
        assert_eq!(
            code(
                r#"{"LookupAttributes":[{"AttributeKey":"EventName","AttributeValue":"a"},{"AttributeKey":"EventName","AttributeValue":"b"}]}"#
            ),
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            code(r#"{"LookupAttributes":[{"AttributeKey":"ReadOnly","AttributeValue":"yes"}]}"#),
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            code(r#"{"LookupAttributes":[{"AttributeKey":"Nope","AttributeValue":"x"}]}"#),
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            code(r#"{"EventCategory":"data"}"#),
            "InvalidEventCategoryException"
        );
        assert!(q(r#"{"EventCategory":"insight"}"#).unwrap().is_none());
        assert!(parse_body(b"[1]").is_err());
    }

    #[test]
    fn resources_come_from_the_parameters() {
        let body = r#"{"requestParameters":{"userName":"bob","accessKeyId":"AKIAX"}}"#;
        assert_eq!(resources(body).len(), 2);
        assert!(resources(r#"{"requestParameters":null}"#).is_empty());
    }
}
