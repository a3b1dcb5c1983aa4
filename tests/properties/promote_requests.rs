//! Promote requests: never a panic, valid ones parse to what they say.

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
}
