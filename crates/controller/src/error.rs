//! The API's errors live in `slipway-api-error`, shared with every HTTP role (logs, registry,
//! git receiver) so a store error answers the same status everywhere.

pub use slipway_api_error::{ApiErr, ApiResult, json_rejections};
