//! Cases about several controllers on one database: shared secrets.

use crate::Backend;
use slipway_store::{API_KEY, CLUSTER_TOKEN, SqlStore};

/// Two stores on one database (two controllers) offering different secrets at once agree on
/// one, and a later offer does not replace it.
pub async fn secrets_are_shared_and_first_wins(b: &Backend) {
    let other = SqlStore::open(&b.url).await.expect("open a second store");
    assert_eq!(b.store.secret(API_KEY).await.unwrap(), None);
    let (x, y) = tokio::join!(
        b.store.secret_or_insert(API_KEY, "key-a"),
        other.secret_or_insert(API_KEY, "key-b"),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y, "two controllers starting at once disagree on the key");
    assert!(x == "key-a" || x == "key-b", "{x}");
    assert_eq!(
        other.secret_or_insert(API_KEY, "key-c").await.unwrap(),
        x,
        "a stored key was replaced"
    );
    assert_eq!(b.store.secret(API_KEY).await.unwrap().as_deref(), Some(&*x));
    // Secrets are separate by name.
    assert_eq!(b.store.secret(CLUSTER_TOKEN).await.unwrap(), None);
    assert_eq!(
        other.secret_or_insert(CLUSTER_TOKEN, "tok").await.unwrap(),
        "tok"
    );
    assert!(b.store.secret_or_insert(CLUSTER_TOKEN, "").await.is_err());
    other.close().await;
}
