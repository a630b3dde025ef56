//! The plugins folder cannot hurt the daemon, and a plugin's identity cannot be taken: a FIFO,
//! a link to a device, a sparse file of gigabytes and a sidecar linked to a secret are each
//! refused with a message that quotes none of their content, while the healthy plugin beside
//! them runs and the daemon stops promptly; a second file declaring a running plugin's name is
//! refused whatever order the files load in after a restart. Through the real binary on
//! SQLite, with `dist/plugins/counter.wasm`.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::Duration;

use daemon::{Deployment, TestDatabase};
use serde_json::Value;

const SECRET: &str = "root:$6$SECRET-HASH-DO-NOT-PRINT:19000:0:99999:7:::";

fn status_of<'a>(list: &'a [(String, Value)], file: &str) -> &'a Value {
    &list
        .iter()
        .find(|(name, _)| name == file)
        .unwrap_or_else(|| panic!("{file} is not listed: {list:?}"))
        .1
}

#[tokio::test]
async fn hostile_files_in_the_plugins_folder_are_refused_without_harm() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    deployment.install("plugins/counter.wasm", "linked.wasm");
    let secret = deployment.path("shadow");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::os::unix::fs::symlink(&secret, deployment.plugin_path("linked.toml")).unwrap();
    let fifo = deployment.plugin_path("fifo.wasm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/dev/zero", deployment.plugin_path("zero.wasm")).unwrap();
    let sparse = std::fs::File::create(deployment.plugin_path("sparse.wasm")).unwrap();
    sparse.set_len(8 * 1024 * 1024 * 1024).unwrap();

    let mut running = deployment.start(&[]);
    running
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    deployment.append_items(3).await;
    running.until_counted(&deployment, 3).await;
    let list = deployment.plugins().await;
    assert_eq!(status_of(&list, "counter.wasm")["status"], "running");
    for (file, why) in [
        ("fifo.wasm", "FIFO"),
        ("zero.wasm", "symbolic link"),
        ("sparse.wasm", "larger than the cap"),
        ("linked.wasm", "symbolic link"),
    ] {
        let record = status_of(&list, file);
        assert_eq!(record["status"], "rejected", "{file}: {record}");
        let error = record["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{file}: {error}");
    }
    let (status, took) = running.stop_with("TERM", Duration::from_secs(10)).await;
    assert!(status.success(), "{}", running.log());
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
    assert!(!running.log().contains("SECRET"), "{}", running.log());

    // Following links, the sidecar linked to the secret is read, and refused without being
    // quoted; the link to a device is still not a regular file.
    let mut following = deployment.start(&["--follow-symlinks"]);
    following
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    following
        .wait_for_log("plugin file rejected", 4, Duration::from_secs(30))
        .await;
    let list = deployment.plugins().await;
    let linked = status_of(&list, "linked.wasm")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        linked.contains("invalid sidecar") && linked.contains("line 1"),
        "{linked}"
    );
    let zero = status_of(&list, "zero.wasm")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(zero.contains("device"), "{zero}");
    following.stop().await;
    let listing = deployment.cli_ok(&["plugins", "list", "--json"]).await;
    assert!(!listing.stdout.contains("SECRET"), "{}", listing.stdout);
    assert!(!following.log().contains("SECRET"), "{}", following.log());
}

#[tokio::test]
async fn a_second_file_cannot_take_a_running_plugins_identity_after_a_restart() {
    let database = TestDatabase::sqlite();
    let mut deployment = Deployment::new(database.url());
    deployment.install("plugins/counter.wasm", "counter.wasm");
    let mut first = deployment.start(&[]);
    first
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    deployment.append_items(2).await;
    first.until_counted(&deployment, 2).await;
    first.stop().await;

    // A file that sorts first and declares the same plugin name.
    deployment.install("plugins/counter.wasm", "aaa-impostor.wasm");
    let mut second = deployment.start(&[]);
    second
        .wait_for_log("plugin file rejected", 1, Duration::from_secs(60))
        .await;
    second
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    let list = deployment.plugins().await;
    let impostor = status_of(&list, "aaa-impostor.wasm");
    assert_eq!(impostor["status"], "rejected", "{impostor}");
    let error = impostor["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("belongs to") && error.contains("counter.wasm"),
        "{error}"
    );
    assert_eq!(status_of(&list, "counter.wasm")["status"], "running");
    deployment.append_items(1).await;
    second.until_counted(&deployment, 3).await;
    second.stop().await;

    // Once the first file is gone, the plugin may move to the other file.
    std::fs::remove_file(deployment.plugin_path("counter.wasm")).unwrap();
    let mut third = deployment.start(&[]);
    third
        .wait_for_log("plugin running", 1, Duration::from_secs(60))
        .await;
    let list = deployment.plugins().await;
    assert_eq!(status_of(&list, "aaa-impostor.wasm")["status"], "running");
    third.stop().await;
}
