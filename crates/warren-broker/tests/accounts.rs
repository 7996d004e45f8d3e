//! Users and permissions in the data directory: recorded when changed, read back by
//! `Broker::open`, and the defaults (vhost `/`, guest, guest's rights) created only when the
//! directory has never held them.

use std::path::Path;

use warren_broker::definitions::Definitions;
use warren_broker::{
    AccessKind, Broker, HashAlgorithm, PasswordHash, Permission, SyncMode, DEFAULT_USER,
    DEFAULT_VHOST,
};
use warren_store::MetaStore;

fn open(dir: &Path) -> Broker {
    Broker::open(dir, SyncMode::Fsync).expect("open the data directory")
}

/// Opens, runs `f`, and closes, releasing the directory for the next open.
fn with_broker<T>(dir: &Path, f: impl FnOnce(&Broker) -> T) -> T {
    let broker = open(dir);
    let out = f(&broker);
    broker.close();
    out
}

#[test]
fn a_new_directory_gets_the_defaults_and_keeps_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_broker(dir.path(), |b| {
        assert!(b.authenticate("guest", "guest", true).is_ok());
    });
    with_broker(dir.path(), |b| {
        let guest = b.user(DEFAULT_USER).expect("guest is recorded");
        assert_eq!(guest.tags, vec!["administrator"]);
        assert!(b.authenticate("guest", "guest", true).is_ok());
        // Still loopback-only.
        assert!(b.authenticate("guest", "guest", false).is_err());
        let user = b.authenticate("guest", "guest", true).expect("login");
        let session = b
            .open_session(&user, DEFAULT_VHOST, 0)
            .expect("rights on /");
        let access = session.access();
        assert!(access.check(AccessKind::Configure, "queue", "q").is_ok());
    });
}

#[test]
fn a_deleted_guest_stays_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_broker(dir.path(), |b| {
        assert!(b.delete_user(DEFAULT_USER).expect("recorded"));
        assert!(!b.delete_user(DEFAULT_USER).expect("recorded"));
    });
    with_broker(dir.path(), |b| {
        assert!(b.user(DEFAULT_USER).is_none());
        assert!(b.authenticate("guest", "guest", true).is_err());
        assert!(
            b.vhost(DEFAULT_VHOST).is_some(),
            "the vhost is not the user's"
        );
        // Deleting the user removed its rights too: a new guest starts with none.
        b.add_user(
            DEFAULT_USER,
            Some(PasswordHash::new("new", HashAlgorithm::Sha256)),
            Vec::new(),
        )
        .expect("recorded");
    });
    with_broker(dir.path(), |b| {
        let user = b.authenticate("guest", "new", true).expect("the new guest");
        assert!(b.open_session(&user, DEFAULT_VHOST, 0).is_err());
    });
}

#[test]
fn a_directory_from_before_users_were_recorded_gets_the_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    with_broker(dir.path(), |b| {
        b.add_vhost("kept").expect("recorded");
    });
    // Strip what this version records about accounts, as an older Warren left it.
    {
        let meta = MetaStore::open(dir.path().join("meta")).expect("open meta");
        for (k, _) in meta.iter() {
            if k.starts_with("user/") || k.starts_with("permission/") || k == "defaults" {
                meta.delete(&k).expect("delete");
            }
        }
        meta.close();
    }
    with_broker(dir.path(), |b| {
        assert!(b.vhost("kept").is_some());
        let user = b.authenticate("guest", "guest", true).expect("guest");
        assert!(b.open_session(&user, DEFAULT_VHOST, 0).is_ok());
    });
}

#[test]
fn users_and_permissions_round_trip_through_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defs = r#"{
        "vhosts": [{"name": "v/1"}],
        "users": [
            {"name": "nopass", "tags": "a, b"},
            {"name": "sha512", "password": "pw", "hashing_algorithm": "sha512"}
        ],
        "permissions": [
            {"user": "sha512", "vhost": "v/1", "configure": "", "write": "^x\\.", "read": ".*"}
        ],
        "topic_permissions": [
            {"user": "sha512", "vhost": "v/1", "exchange": "t", "write": "^{username}\\.", "read": ""},
            {"user": "nopass", "vhost": "v/1", "exchange": "t", "write": ".*", "read": ".*"}
        ]
    }"#;
    with_broker(dir.path(), |b| {
        Definitions::parse(defs)
            .expect("parse")
            .apply(b)
            .expect("apply");
        b.set_permission(
            "nopass",
            "v/1",
            Permission::new(".*", "", "").expect("valid"),
        )
        .expect("recorded");
        assert!(b.clear_permission("nopass", "v/1").expect("recorded"));
        assert!(!b.clear_permission("nopass", "v/1").expect("recorded"));
        assert!(b
            .clear_topic_permissions("nopass", "v/1", Some("t"))
            .expect("recorded"));
    });
    with_broker(dir.path(), |b| {
        assert!(b.vhost("v/1").is_some());
        let nopass = b.user("nopass").expect("nopass");
        assert!(nopass.password.is_none());
        assert_eq!(nopass.tags, vec!["a", "b"]);
        assert!(b.authenticate("nopass", "", true).is_err());

        let u = b.user("sha512").expect("sha512");
        let hash = u.password.as_ref().expect("a hash");
        assert_eq!(hash.algorithm, HashAlgorithm::Sha512);
        let user = b.authenticate("sha512", "pw", false).expect("login");
        let session = b.open_session(&user, "v/1", 0).expect("rights on v/1");
        let access = session.access();
        assert_eq!(access.permission.configure, "");
        assert_eq!(access.permission.write, "^x\\.");
        assert!(access.check(AccessKind::Write, "exchange", "x.y").is_ok());
        assert!(access.check(AccessKind::Write, "exchange", "y").is_err());
        assert!(access.check(AccessKind::Configure, "queue", "q").is_err());
        // Topic rights came back too, with {username} filled in for this connection.
        assert!(access
            .check_topic(AccessKind::Write, "t", "sha512.a")
            .is_ok());
        assert!(access
            .check_topic(AccessKind::Write, "t", "other.a")
            .is_err());
        assert!(access.check_topic(AccessKind::Read, "t", "").is_ok());
        assert!(access.check_topic(AccessKind::Read, "t", "a").is_err());
        assert_eq!(
            b.topic_permissions().len(),
            1,
            "the cleared one stays cleared"
        );

        let nopass = b.user("nopass").expect("nopass");
        assert!(
            b.open_session(&nopass, "v/1", 0).is_err(),
            "cleared for good"
        );
    });
}

#[test]
fn vhost_metadata_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = warren_broker::VHostMetadata {
        description: "orders".into(),
        tags: vec!["prod".into()],
        default_queue_type: Some("quorum".into()),
    };
    with_broker(dir.path(), |b| {
        assert!(b.put_vhost("v", meta.clone()).expect("recorded"));
        assert!(!b.put_vhost("v", meta.clone()).expect("recorded"));
    });
    with_broker(dir.path(), |b| {
        assert_eq!(b.vhost("v").expect("restored").metadata(), meta);
    });
}
