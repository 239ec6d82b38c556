//! The file store's tests: one blob per content, root only, collected with its last file;
//! expiry and the sweeper; quotas refused with the reason.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::store::SqliteStore;

async fn store_in(dir: &Path, cfg: FileConfig) -> (Arc<SqliteStore>, FileStore) {
    let db = Arc::new(SqliteStore::in_memory().await.unwrap());
    let files = FileStore::open(dir.join("files"), db.clone(), cfg).unwrap();
    (db, files)
}

fn item(path: &str, bytes: &[u8]) -> KeepItem {
    KeepItem {
        path: path.into(),
        bytes: Ok(bytes.to_vec()),
    }
}

fn blobs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("files/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn file_id(k: &Kept) -> String {
    match k {
        Kept::File { file_id, .. } => file_id.clone(),
        Kept::Refused { error } => panic!("refused: {error}"),
    }
}

#[tokio::test]
async fn same_bytes_one_blob_root_only_and_collected_with_the_last_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (_db, files) = store_in(tmp.path(), FileConfig::default()).await;
    let kept = files
        .keep(
            "master",
            None,
            "exec_1",
            vec![item("a", b"same"), item("b", b"same"), item("c", b"other")],
        )
        .await;
    assert_eq!(blobs(tmp.path()).len(), 2, "deduplicated");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&tmp.path().join("files")), 0o700);
    assert_eq!(mode(&tmp.path().join("files/sha256")), 0o700);
    let Kept::File { sha256, size, .. } = &kept[0] else {
        panic!()
    };
    assert_eq!(*size, 4);
    assert_eq!(mode(&files.blob_path(sha256, true)), 0o555);
    // Read-only form on demand.
    let held = files.hold().await;
    let refs = files
        .resolve(
            &held,
            &Principal::Master,
            &[NewFileRef {
                path: sandbox::RelPath::parse("x").unwrap(),
                file_id: file_id(&kept[0]),
                mode: Some(0o644),
            }],
        )
        .await
        .unwrap();
    drop(held);
    assert!(!refs[0].executable);
    assert_eq!(mode(&files.blob_path(sha256, false)), 0o444);
    // The blob goes with the last file that has it.
    files
        .delete(&Principal::Master, &file_id(&kept[0]))
        .await
        .unwrap();
    assert!(files.blob_path(sha256, true).exists());
    files
        .delete(&Principal::Master, &file_id(&kept[1]))
        .await
        .unwrap();
    assert!(!files.blob_path(sha256, true).exists());
    assert!(!files.blob_path(sha256, false).exists());
    assert_eq!(blobs(tmp.path()).len(), 1);
    // Gone is gone.
    assert!(matches!(
        files.get(&Principal::Master, &file_id(&kept[0])).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn expired_files_are_not_found_and_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = FileConfig {
        ttl: Duration::ZERO,
        ..FileConfig::default()
    };
    let (_db, files) = store_in(tmp.path(), cfg).await;
    let kept = files.keep("master", None, "e", vec![item("a", b"x")]).await;
    assert!(matches!(
        files.get(&Principal::Master, &file_id(&kept[0])).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(blobs(tmp.path()).len(), 1);
    assert_eq!(files.sweep().await.unwrap(), Swept { files: 1, blobs: 1 });
    assert!(blobs(tmp.path()).is_empty());
}

#[tokio::test]
async fn quotas_refuse_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = FileConfig {
        max_files: Some(2),
        ..FileConfig::default()
    };
    let (db, files) = store_in(tmp.path(), cfg).await;
    let key = crate::store::ApiKeyRow {
        id: "key_k".into(),
        name: "k".into(),
        token_hash: "h".into(),
        quota: crate::auth::Quota::default(),
        manage_projects: false,
        created_at: Micros::now(),
    };
    assert!(crate::store::ApiKeys::insert_api_key(db.as_ref(), &key)
        .await
        .unwrap());
    let mut room = Room {
        left: 10,
        max: 100,
        whose: "this API key's max_storage_bytes".into(),
    };
    let kept = files
        .keep(
            "key:key_k",
            Some(&mut room),
            "e",
            vec![
                item("big", &[0; 11]),
                item("a", b"12345"),
                item("b", b"12345"),
                item("c", b"1"),
            ],
        )
        .await;
    assert!(
        matches!(&kept[0], Kept::Refused { error }
            if error.contains("max_storage_bytes") && error.contains("10 are left")),
        "{kept:?}"
    );
    file_id(&kept[1]);
    file_id(&kept[2]);
    assert_eq!(room.left, 0, "what is kept is taken from the room");
    assert!(
        matches!(&kept[3], Kept::Refused { error } if error.contains("--file-max-count")),
        "{kept:?}"
    );
    // A key deleted meanwhile keeps nothing.
    room.left = 100;
    let gone = files
        .keep("key:key_gone", Some(&mut room), "e", vec![item("z", b"z")])
        .await;
    assert!(matches!(&gone[0], Kept::Refused { error } if error.contains("deleted")));
    // The master token has no quota.
    let more = files
        .keep("master", None, "e", vec![item("m", &[1; 100])])
        .await;
    file_id(&more[0]);
}
