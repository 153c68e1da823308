use super::*;
use slipway_types::ValidationError;

/// Every store error kind, with the status and code it must answer everywhere.
fn cases() -> Vec<(StoreError, u16, ErrorCode, &'static str)> {
    vec![
        (
            StoreError::NotFound("app \"x\" not found".into()),
            404,
            ErrorCode::NotFound,
            "not_found",
        ),
        (
            StoreError::Conflict("app \"x\" already exists".into()),
            409,
            ErrorCode::Conflict,
            "conflict",
        ),
        (
            StoreError::Invalid(ValidationError::new("name", "app name must not be empty")),
            422,
            ErrorCode::ValidationError,
            "validation_error",
        ),
        (
            StoreError::Unavailable("pool timed out".into()),
            503,
            ErrorCode::Unavailable,
            "unavailable",
        ),
        (
            StoreError::Database("disk I/O error".into()),
            500,
            ErrorCode::Internal,
            "internal",
        ),
    ]
}

#[test]
fn each_store_error_kind_has_one_status_and_code() {
    for (e, status, code, _) in cases() {
        assert_eq!(code_of(&e), code, "{e:?}");
        assert_eq!(status_of(&e).as_u16(), status, "{e:?}");
        let api = ApiErr::from(e);
        assert_eq!(api.0.code, code);
        assert_eq!(api.status().as_u16(), status);
    }
}

#[tokio::test]
async fn a_store_error_answers_json_with_its_status_code_and_message() {
    for (e, status, _, wire_code) in cases() {
        // What the store said, without the store's own prefix.
        let message = e.to_string();
        let message = message
            .trim_start_matches("database error: ")
            .trim_start_matches("database unavailable: ")
            .to_string();
        let resp = ApiErr::from(e).into_response();
        assert_eq!(resp.status().as_u16(), status);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], wire_code, "{v}");
        let got = v["message"].as_str().unwrap();
        // The user reads what went wrong; an internal error says it is one.
        assert!(
            got.contains(message.trim_start_matches("database error: ")),
            "{got}"
        );
        if status == 500 {
            assert!(got.starts_with("internal error: "), "{got}");
        }
        if status == 422 {
            assert_eq!(v["field"], "name", "{v}");
        } else {
            assert!(v.get("field").is_none(), "{v}");
        }
    }
}

#[test]
fn validation_and_api_errors_keep_their_code() {
    let v = ApiErr::from(ValidationError::new("scale", "must be 0 or more"));
    assert_eq!(
        (v.status().as_u16(), v.0.field.as_deref()),
        (422, Some("scale"))
    );
    let b = ApiErr::from(ApiError::bad_request("lines must be a number"));
    assert_eq!(b.status().as_u16(), 400);
    assert_eq!(b.to_string(), "lines must be a number");
}
