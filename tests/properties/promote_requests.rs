//! Promote requests (promotions, pauses, resumes): never a panic, valid ones parse to what they
//! say.

use proptest::prelude::*;
use serde_json::json;

use crate::arbitrary::*;
use crate::cases;

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn promote_requests_never_panic_and_valid_ones_parse(
        members in prop::collection::btree_map(key(), json_value(), 0..6),
        app in prop_oneof![text(), "[a-z0-9][a-z0-9-]{0,62}"],
        image in prop_oneof![image_tag().prop_map(|t| ("tag", t)), image_digest().prop_map(|d| ("digest", d))],
        reason in prop::option::of("[ -~]{0,256}"),
    ) {
        let mut request = json!({ "app": app });
        request[image.0] = json!(image.1);
        if let Some(reason) = &reason {
            request["reason"] = json!(reason);
        }
        let valid_app = matches(r"[a-z0-9][a-z0-9-]{0,62}", &app);
        match conveyor::promote::parse_request(request.clone()) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.app.as_str(), app.as_str());
                prop_assert_eq!(parsed.reason, reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()));
            }
            Err(error) => prop_assert!(!valid_app, "{error} for {request}"),
        }
        // The same with arbitrary members mixed in: an error or a request, never a panic.
        for (name, value) in members {
            request[name] = value;
        }
        let _ = conveyor::promote::parse_request(request);
    }

    #[test]
    fn operation_requests_never_panic_and_valid_ones_parse(
        members in prop::collection::btree_map(key(), json_value(), 0..6),
        app in prop_oneof![text(), "[a-z0-9][a-z0-9-]{0,62}"],
        environment in prop::option::of(prop_oneof![Just("stage"), Just("prod")]),
        reason in "[ -~]{0,256}",
        by in prop::option::of(text()),
        pause in any::<bool>(),
    ) {
        use conveyor::operate::{parse, Kind, Request};
        let mut request = json!({ "operation": if pause { "pause" } else { "resume" }, "app": app,
                                  "environment": environment });
        if pause {
            request["reason"] = json!(reason);
        }
        if let Some(by) = &by {
            request["by"] = json!(by);
        }
        let valid_app = matches(r"[a-z0-9][a-z0-9-]{0,62}", &app);
        let valid_by = by.as_ref().is_none_or(|b| b.chars().count() <= 256 && !b.chars().any(char::is_control));
        let valid_reason = !pause || !reason.trim().is_empty();
        match parse(request.clone()) {
            Ok(Request::Operate(parsed)) => {
                prop_assert_eq!(parsed.app.as_str(), app.as_str());
                let parsed_env = parsed.environment.map(|e| e.to_string());
                prop_assert_eq!(parsed_env.as_deref(), environment);
                prop_assert_eq!(parsed.on_behalf_of, by.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty()));
                match parsed.kind {
                    Kind::Pause { reason: parsed } => prop_assert!(pause && parsed == reason.trim()),
                    Kind::Resume { deploy_latest } => prop_assert!(!pause && !deploy_latest),
                }
            }
            Ok(Request::Promote(_) | Request::Decide(_)) => prop_assert!(false, "{request} parsed as something else"),
            Err(error) => prop_assert!(!(valid_app && valid_by && valid_reason), "{error} for {request}"),
        }
        for (name, value) in members {
            request[name] = value;
        }
        let _ = parse(request);
    }
}
